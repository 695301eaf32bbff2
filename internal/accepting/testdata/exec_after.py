"""Waits in poll(2) on stdin until it closes, then execs its arguments:
a process that changes program, as a worker started through baton's exec
shim does, while a Watcher holds its /proc files (its memory among them).
"""
import os
import select
import sys

poller = select.poll()
poller.register(0, select.POLLIN)
print("holding", flush=True)
while True:
    poller.poll()
    if not os.read(0, 4096):
        break
os.execv(sys.argv[1], sys.argv[1:])
