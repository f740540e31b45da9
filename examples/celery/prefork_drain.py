"""Celery's own drain rate, to set beside `taskq-bench --workload celery` in the same sitting.

Fills Celery's queue with N no-op tasks (untimed), then starts a Celery prefork worker and
times it from its start until all N results are stored (Celery's Redis result backend), as
taskq-bench's `celery` workload times a taskq worker draining the same kind of messages.
The broker is Redis or RabbitMQ; results go to the Redis at BACKEND (the broker by default).

    python3 -m venv /tmp/cv && /tmp/cv/bin/pip install "celery[redis]==5.4.0" "kombu==5.4.2"
    /tmp/cv/bin/python examples/celery/prefork_drain.py BROKER N CONCURRENCY [BACKEND]
    /tmp/cv/bin/python examples/celery/prefork_drain.py redis://127.0.0.1:6390 20000 2
    /tmp/cv/bin/python examples/celery/prefork_drain.py amqp://guest:guest@127.0.0.1:5672/bench 20000 2 redis://127.0.0.1:6390
"""

import os
import subprocess
import sys
import tempfile
import time

import redis
from celery import Celery

TASKS = '''
import os
from celery import Celery
app = Celery("bench", broker=os.environ["BROKER"], backend=os.environ["BACKEND"])

@app.task(name="bench.noop")
def noop(n):
    return n
'''


def main():
    url, count, concurrency = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    backend = sys.argv[4] if len(sys.argv) > 4 else url
    queue = f"celery-bench-{os.getpid()}"
    app = Celery("producer", broker=url, backend=backend)
    for n in range(count):
        app.send_task("bench.noop", kwargs={"n": n}, queue=queue)
    server = redis.Redis.from_url(backend)
    before = len(server.keys("celery-task-meta-*"))
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "tasks.py"), "w") as tasks:
            tasks.write(TASKS)
        started = time.monotonic()
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork",
             "-c", concurrency, "-Q", queue, "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "error"],
            cwd=work, env={**os.environ, "BROKER": url, "BACKEND": backend},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while len(server.keys("celery-task-meta-*")) - before < count:
                time.sleep(0.05)
            took = time.monotonic() - started
        finally:
            worker.terminate()
            worker.wait()
    print(f"celery prefork -c {concurrency}: {count} tasks in {took:.2f} s = {count / took:.0f}/s "
          "(from the worker's start, its start-up included)")


if __name__ == "__main__":
    main()
