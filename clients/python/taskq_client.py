"""A small taskq producer for Python: enqueue tasks by name, read and wait for their results.

It speaks the wire protocol of docs/protocol.md over the Redis layout of docs/redis.md, as the
Rust client does: an enqueue is one pipelined round trip that pushes the envelope and the
wake-up token; a task's declared queue, priority, retries and expiry (published by the
workers that register it) apply unless the call says otherwise.

    from taskq_client import Client
    client = Client("redis://127.0.0.1:6379")
    task_id = client.enqueue("demo.add", {"a": 1, "b": 2})
    record = client.wait(task_id, timeout=30)
    assert record["state"] == "SUCCESS" and record["result"] == 3

Needs redis-py (`pip install redis`). With OpenTelemetry installed (`pip install
taskq-client[otel]` and an SDK the application configures), each enqueue writes the current
span's context into the envelope as W3C `traceparent`/`tracestate`, so the worker's run joins
the caller's trace; a `traceparent` passed in `headers=` wins.
"""

import datetime
import hashlib
import hmac
import json
import time
import uuid

import redis

try:  # optional: the trace context of the caller's current span, when OpenTelemetry is there
    from opentelemetry import propagate as _otel_propagate
except ImportError:
    _otel_propagate = None

PROTOCOL_VERSION = 1
DEFAULT_QUEUE = "default"
FINAL_STATES = {"SUCCESS", "FAILURE", "REVOKED", "EXPIRED"}
_FORBIDDEN_IN_NAMES = set("{}")


def _with_trace_context(headers):
    """`headers` (a new dict) with the current OpenTelemetry context written in as W3C
    `traceparent`/`tracestate`, unless the caller passed a `traceparent` or OpenTelemetry is
    not installed; without an active span the propagator writes nothing."""
    headers = dict(headers or {})
    if _otel_propagate is not None and "traceparent" not in headers:
        _otel_propagate.inject(headers)
    return headers


class TaskqError(Exception):
    """A task ended in a state other than SUCCESS, or waiting for it ran out of time."""


def _check_name(what, name):
    if not name or len(name.encode()) > 200:
        raise ValueError(f"invalid {what}: {name!r} must be 1 to 200 bytes")
    if any(c.isspace() or c in _FORBIDDEN_IN_NAMES or not c.isprintable() for c in name):
        raise ValueError(f"invalid {what}: {name!r} contains whitespace, a control character or a brace")


def _rfc3339(moment):
    return moment.astimezone(datetime.timezone.utc).isoformat()


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _millis(text):
    """Milliseconds since the epoch of an RFC 3339 time, truncated as the Rust side does."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)


def canonical_bytes(envelope, args_json):
    """The bytes a signature covers (docs/protocol.md): a compact JSON array of v, id, task,
    the arguments exactly as they appear in the envelope, created_at and expires in ms, max
    retries and the headers with sorted keys."""
    def text(value):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    expires = envelope.get("expires")
    parts = [
        text(envelope["v"]),
        text(envelope["id"]),
        text(envelope["task"]),
        args_json,
        str(_millis(envelope["created_at"])),
        str(_millis(expires)) if expires else "null",
        text(envelope.get("max_retries")),
        text(envelope.get("headers", {})),
    ]
    return ("[" + ",".join(parts) + "]").encode()


class Client:
    """A producer for the taskq deployment whose Redis is at `url`.

    With `signing_key=(key_id, secret_bytes)` every envelope is signed (HMAC-SHA256), for
    workers that verify signatures.
    """

    def __init__(self, url="redis://127.0.0.1:6379", signing_key=None):
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._signing_key = signing_key

    def _now(self):
        """Now by the server's clock: due times and expiries are decided by Redis's clock."""
        seconds, micros = self._redis.time()
        return datetime.datetime.fromtimestamp(seconds + micros / 1e6, datetime.timezone.utc)

    def declaration(self, task):
        """What the workers registering `task` declared (queue, priority, retries...), or None."""
        raw = self._redis.hget("taskq:tasks", task)
        return json.loads(raw) if raw else None

    def _envelope(self, task, args, declared, now, queue, priority, countdown, eta, expires_in,
                  max_retries, headers, task_id):
        declared = declared or {}
        queue = queue or declared.get("queue") or DEFAULT_QUEUE
        _check_name("queue", queue)
        _check_name("task name", task)
        if priority is None:
            priority = declared.get("priority", 0)
        envelope = {
            "v": PROTOCOL_VERSION,
            "id": task_id or str(uuid.uuid4()),
            "task": task,
            "args": args,
            "queue": queue,
            "priority": max(0, min(9, int(priority))),
            "attempt": 0,
            "created_at": _rfc3339(now),
        }
        if max_retries is None:
            max_retries = declared.get("max_retries")
        if max_retries is not None:
            envelope["max_retries"] = max_retries
        if eta is None and countdown is not None:
            eta = now + datetime.timedelta(seconds=countdown)
        if eta is not None:
            envelope["eta"] = _rfc3339(eta)
        if expires_in is None and declared.get("expires_ms") is not None:
            expires_in = declared["expires_ms"] / 1000
        if expires_in is not None:
            envelope["expires"] = _rfc3339(now + datetime.timedelta(seconds=expires_in))
        if headers:
            envelope["headers"] = dict(headers)
        return envelope

    def _sign(self, envelope):
        if self._signing_key is None:
            return
        key_id, secret = self._signing_key
        # The arguments as they will appear in the payload (json.dumps escapes as below).
        args_json = json.dumps(envelope["args"], separators=(",", ":"))
        mac = hmac.new(secret, canonical_bytes(envelope, args_json), hashlib.sha256).hexdigest()
        envelope["sig"] = f"{key_id}:{mac}"

    def _push(self, pipe, envelope, now):
        queue, level = envelope["queue"], envelope["priority"]
        self._sign(envelope)
        payload = json.dumps(envelope, separators=(",", ":"))
        eta = envelope.get("eta")
        if eta and datetime.datetime.fromisoformat(eta) > now:
            due_ms = int(datetime.datetime.fromisoformat(eta).timestamp() * 1000)
            scheduled = f"taskq:{{{queue}}}:scheduled"
            pipe.zadd(scheduled, {f"{level}{payload}": due_ms})
            # Lowers the set's entry in the due index, which workers read to learn that a
            # message is due (else it waits for their pass over every queue, once a minute).
            pipe.zadd("taskq:due", {scheduled: due_ms}, lt=True)
        else:
            pipe.lpush(f"taskq:{{{queue}}}:pending:{level}", payload)
        # Wakes one idle worker at once (else it notices within its block timeout).
        pipe.lpush(f"taskq:{{{queue}}}:wake", "1")
        pipe.ltrim(f"taskq:{{{queue}}}:wake", 0, 0)
        pipe.sadd("taskq:queues", queue)
        # When it was last seen: an idle queue leaves the registry only after 24 h unseen.
        pipe.hset("taskq:queues-seen{taskq:queues}", queue, int(now.timestamp() * 1000))

    def enqueue(self, task, args=None, *, queue=None, priority=None, countdown=None, eta=None,
                expires_in=None, max_retries=None, headers=None, task_id=None):
        """Enqueues one invocation of `task` with JSON-able `args`; returns its id.

        Per-call options win over what the task declared, which wins over the defaults;
        `countdown` and `expires_in` are seconds, `eta` an aware datetime.
        """
        return self.enqueue_many(task, [args if args is not None else {}], queue=queue,
                                 priority=priority, countdown=countdown, eta=eta,
                                 expires_in=expires_in, max_retries=max_retries,
                                 headers=headers, task_ids=[task_id] if task_id else None)[0]

    def enqueue_many(self, task, args_list, *, queue=None, priority=None, countdown=None,
                     eta=None, expires_in=None, max_retries=None, headers=None, task_ids=None):
        """Enqueues one invocation per element of `args_list` in one round trip; returns ids."""
        declared = self.declaration(task)
        now = self._now()
        headers = _with_trace_context(headers)
        pipe = self._redis.pipeline(transaction=False)
        ids = []
        for index, args in enumerate(args_list):
            envelope = self._envelope(task, args, declared, now, queue, priority, countdown, eta,
                                      expires_in, max_retries, headers,
                                      task_ids[index] if task_ids else None)
            self._push(pipe, envelope, now)
            ids.append(envelope["id"])
        pipe.execute()
        return ids

    def result(self, task_id):
        """The stored result record of `task_id` (a dict), or None while nothing is known."""
        raw = self._redis.get(f"taskq:result:{task_id}")
        return json.loads(raw) if raw else None

    def state(self, task_id):
        """PENDING while nothing is known, else the record's state (STARTED, SUCCESS, ...)."""
        record = self.result(task_id)
        return record["state"] if record else "PENDING"

    def wait(self, task_id, timeout=30.0):
        """Waits for a final state, woken by the worker's announcement (pub/sub), and returns
        the record; raises TaskqError on timeout or when the task did not succeed."""
        deadline = time.monotonic() + timeout
        pubsub = self._redis.pubsub()
        pubsub.subscribe(f"taskq:result-ready:{task_id}")
        try:
            while True:
                record = self.result(task_id)  # after subscribing: no write can slip by
                if record and record["state"] in FINAL_STATES:
                    if record["state"] != "SUCCESS":
                        raise TaskqError(f"task {task_id} ended {record['state']}: {record.get('error')}")
                    return record
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TaskqError(f"timed out after {timeout} s waiting for task {task_id}")
                pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, 1.0))
        finally:
            pubsub.close()
