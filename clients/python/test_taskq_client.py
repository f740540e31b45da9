"""Tests of taskq_client against a real redis-server and a real taskq worker.

Run by `examples/tests/python_client.rs`, which starts both, installs the client into a fresh
virtual environment (`pip install ./clients/python`) and runs this file from a directory
without the source, so the installed copy is the one tested; it passes the URL in
TASKQ_BROKER and the directory the module must come from in TASKQ_CLIENT_FROM.
"""

import datetime
import json
import os
import sys
import time
import unittest
import uuid

import taskq_client
from taskq_client import Client, TaskqError

if os.environ.get("TASKQ_CLIENT_FROM") and not os.path.abspath(taskq_client.__file__).startswith(
        os.environ["TASKQ_CLIENT_FROM"]):
    sys.exit(f"testing {taskq_client.__file__}, not the copy in {os.environ['TASKQ_CLIENT_FROM']}")

URL = os.environ["TASKQ_BROKER"]


class ClientAgainstAWorker(unittest.TestCase):
    def setUp(self):
        self.client = Client(URL)

    def test_signed_tasks_run_and_a_wrong_secret_is_refused(self):
        # The worker accepts key "py" (TASKQ_SIGNING_KEYS, set by python_client.rs).
        signed = Client(URL, signing_key=("py", bytes.fromhex(os.environ["TASKQ_TEST_KEY"])))
        task_id = signed.enqueue("demo.add", {"a": 40, "b": 2, "note": "sí"},
                                 headers={"b": "2", "a": "ünï"}, expires_in=60, max_retries=1)
        self.assertEqual(signed.wait(task_id, timeout=30)["result"], 42)
        forged = Client(URL, signing_key=("py", b"not the secret, not at all!!!!!!"))
        task_id = forged.enqueue("demo.add", {"a": 1, "b": 1})
        with self.assertRaises(TaskqError) as raised:
            forged.wait(task_id, timeout=30)
        self.assertIn("bad_signature", str(raised.exception))

    def test_enqueue_and_wait_for_the_typed_result(self):
        task_id = self.client.enqueue("demo.add", {"a": 2, "b": 3})
        record = self.client.wait(task_id, timeout=30)
        self.assertEqual(record["state"], "SUCCESS")
        self.assertEqual(record["result"], 5)
        self.assertEqual(self.client.state(task_id), "SUCCESS")

    def test_bulk_enqueue_runs_every_invocation(self):
        ids = self.client.enqueue_many("demo.add", [{"a": i, "b": 1} for i in range(20)])
        self.assertEqual(len(set(ids)), 20)
        results = [self.client.wait(i, timeout=30)["result"] for i in ids]
        self.assertEqual(results, [i + 1 for i in range(20)])

    def test_the_declared_retries_apply_by_name(self):
        # demo.fail declares 10 retries: failing 4 times needs more than the default 3.
        declared = self.client.declaration("demo.fail")
        self.assertIsNotNone(declared, "the worker publishes its declarations")
        self.assertEqual(declared["max_retries"], 10)
        task_id = self.client.enqueue("demo.fail", {"times": 4})
        record = self.client.wait(task_id, timeout=90)
        self.assertEqual(record["attempts"], 5)

    def test_a_failure_raises_with_its_reason(self):
        task_id = self.client.enqueue("nobody.handles.this", {})
        with self.assertRaises(TaskqError) as raised:
            self.client.wait(task_id, timeout=30)
        self.assertIn("unknown_task", str(raised.exception))

    def test_a_countdown_is_not_early(self):
        enqueued = time.monotonic()
        task_id = self.client.enqueue("demo.add", {"a": 1, "b": 1}, countdown=1.5)
        self.assertEqual(self.client.state(task_id), "PENDING")
        self.client.wait(task_id, timeout=30)
        self.assertGreaterEqual(time.monotonic() - enqueued, 1.5)

    def test_unknown_ids_are_pending_and_bad_names_are_refused(self):
        self.assertEqual(self.client.state(str(uuid.uuid4())), "PENDING")
        with self.assertRaises(ValueError):
            self.client.enqueue("demo.add", {}, queue="two words")
        with self.assertRaises(ValueError):
            self.client.enqueue("demo.add", {}, queue="}x")

    def test_expiry_and_eta_are_written_in_the_envelope(self):
        eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        task_id = self.client.enqueue("demo.add", {"a": 1, "b": 1}, eta=eta, expires_in=60,
                                      priority=12, queue="python-later")
        stats_key = "taskq:{python-later}:scheduled"
        members = self.client._redis.zrange(stats_key, 0, -1)
        self.assertEqual(len(members), 1)
        self.assertTrue(members[0].startswith("9"), "priority clamps to 9")
        self.assertIn(task_id, members[0])
        due = self.client._redis.zscore(stats_key, members[0])
        self.assertEqual(self.client._redis.zscore("taskq:due", stats_key), due,
                         "the due index names the scheduled set at its due time")


    def test_the_callers_trace_context_goes_into_the_envelope(self):
        # OpenTelemetry's SDK is installed beside the client (python_client.rs): the worker's
        # run becomes a child of the span current at enqueue.
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        tracer = TracerProvider().get_tracer("taskq-client-test")
        with tracer.start_as_current_span("http request") as span:
            task_id = self.client.enqueue("demo.add", {"a": 1, "b": 1}, queue="python-traced")
            context = span.get_span_context()
        traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
        self.assertEqual(self._pending("python-traced", task_id)["headers"]["traceparent"],
                         traceparent)
        # The caller's own traceparent wins, and outside any span nothing is written.
        own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        task_id = self.client.enqueue("demo.add", {}, queue="python-traced",
                                      headers={"traceparent": own})
        self.assertEqual(self._pending("python-traced", task_id)["headers"]["traceparent"], own)
        task_id = self.client.enqueue("demo.add", {}, queue="python-traced")
        self.assertNotIn("headers", self._pending("python-traced", task_id))
        self.assertFalse(trace.get_current_span().get_span_context().is_valid)

    def _pending(self, queue, task_id):
        """The envelope of `task_id`, waiting in `queue` (which no worker serves)."""
        for raw in self.client._redis.lrange(f"taskq:{{{queue}}}:pending:0", 0, -1):
            envelope = json.loads(raw)
            if envelope["id"] == task_id:
                return envelope
        self.fail(f"{task_id} is not pending in {queue}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
