# pythreads: a threading pool hashes deterministic data in 24 tasks, with
# sleeps between steps, and prints a digest of all results: the same digest
# after a checkpoint/restore as in an uninterrupted run.
import hashlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

TASKS = int(sys.argv[1]) if len(sys.argv) > 1 else 24
results = {}
lock = threading.Lock()


def work(i):
    h = hashlib.sha256()
    for k in range(20000):
        h.update(str(i * k).encode())
        if k % 1000 == 0:
            time.sleep(0.01)
    with lock:
        results[i] = h.hexdigest()
    return i


print("ready", flush=True)
with ThreadPoolExecutor(max_workers=6) as ex:
    done = list(ex.map(work, range(TASKS)))
assert done == list(range(TASKS))
digest = hashlib.sha256(repr(sorted(results.items())).encode()).hexdigest()[:16]
print("py threads", len(results), digest, flush=True)
