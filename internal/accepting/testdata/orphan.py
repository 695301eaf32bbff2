"""A generation whose server leaves it. The process baton started forks
a child, which forks the server; the server prints "server PID" and waits
for the child to exit, which it does on a line on stdin, handing the
server to init (or a subreaper). The server then blocks in accept(2) on
fd 3. The first process holds fd 3 and never waits on it."""
import os
import socket
import sys
import time


def say(line):
    os.write(1, line.encode() + b"\n")  # one write: two processes print


listener = socket.socket(fileno=3)
r, w = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        os.close(w)
        say(f"server {os.getpid()}")
        os.read(r, 1)  # end of file once the child has exited
        listener.setblocking(True)
        while True:
            conn, _ = listener.accept()
            conn.sendall(b"hello\n")
            conn.close()
    os.close(r)
    sys.stdin.readline()
    os._exit(0)
os.close(r)
os.close(w)
say("holding")
os.wait()
time.sleep(3600)
