#!/usr/bin/env python3
"""dict: a Python interpreter with a large heap, checkpointed mid-run.

Builds a dict of 100000 entries deterministically and increments a counter
in it every 20ms. On SIGUSR1 it prints "py ok <counter> <sha256>" where the
hash covers the sorted dict without the counter, so the hash taken before a
checkpoint must equal the one after restore, and the counter must go on.
Output goes through os.write: no buffering between the program and its log.
"""
import hashlib
import os
import signal
import time

COUNTER = "__counter__"

d = {f"key{i:06d}": (i * 7919) % 100003 for i in range(100000)}
d.update({f"str{i}": "x" * (i % 50) + str(i) for i in range(0, 100000, 97)})
d[COUNTER] = 0


def digest():
    h = hashlib.sha256()
    for k in sorted(k for k in d if k != COUNTER):
        h.update(f"{k}={d[k]};".encode())
    return h.hexdigest()


def on_usr1(signum, frame):
    os.write(1, f"py ok {d[COUNTER]} {digest()}\n".encode())


signal.signal(signal.SIGUSR1, on_usr1)
os.write(1, b"ready\n")
while True:
    time.sleep(0.02)
    d[COUNTER] += 1
