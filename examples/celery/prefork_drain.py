"""Celery's own drain rate, to set beside `taskq-bench --workload celery` in the same sitting.

Fills Celery's queue with N no-op tasks (untimed), then starts a Celery prefork worker and
times it from its start until all N results are stored (Celery's Redis result backend), as
taskq-bench's `celery` workload times a taskq worker draining the same kind of messages.

    python3 -m venv /tmp/cv && /tmp/cv/bin/pip install "celery[redis]==5.4.0" "kombu==5.4.2"
    /tmp/cv/bin/python examples/celery/prefork_drain.py redis://127.0.0.1:6390 20000 2
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
app = Celery("bench", broker=os.environ["BROKER"], backend=os.environ["BROKER"])

@app.task(name="bench.noop")
def noop(n):
    return n
'''


def main():
    url, count, concurrency = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    queue = f"celery-bench-{os.getpid()}"
    app = Celery("producer", broker=url, backend=url)
    for n in range(count):
        app.send_task("bench.noop", kwargs={"n": n}, queue=queue)
    server = redis.Redis.from_url(url)
    before = len(server.keys("celery-task-meta-*"))
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "tasks.py"), "w") as tasks:
            tasks.write(TASKS)
        started = time.monotonic()
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork",
             "-c", concurrency, "-Q", queue, "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "error"],
            cwd=work, env={**os.environ, "BROKER": url},
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
