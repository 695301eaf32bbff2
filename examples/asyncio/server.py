#!/usr/bin/env python3
"""A baton worker on plain asyncio, standard library only, meant to run as
several workers (one event loop per core):

    baton --pidfile /tmp/app.pid --listen http=tcp://127.0.0.1:8000 --workers 4 -- python3 examples/asyncio/server.py
    curl http://127.0.0.1:8000/            # gen=1 pid=...
    kill -HUP $(cat /tmp/app.pid)          # four new workers, no request lost

Without baton it binds its own address (default 127.0.0.1:8000):

    python3 examples/asyncio/server.py 127.0.0.1:8000

What it does by hand:

- takes the listening socket from fd 3 if LISTEN_PID is its own PID
  (systemd's socket activation); every worker gets the same socket, and
  the kernel hands each connection to one of them;
- accepts from its event loop, and says READY=1 on NOTIFY_SOCKET;
- on SIGTERM stops accepting (the socket stays open in baton, so nothing
  is refused), answers every request it has accepted, gives each
  connection with nothing in flight GRACE seconds to send one more request
  (answered with "Connection: close"), and exits 0.

The HTTP here is the least a load balancer or a test needs (HTTP/1.1 with
Content-Length bodies and keep-alive); a real app puts its framework where
answer() is.
"""

import asyncio
import os
import signal
import socket
import sys

# How long a connection with nothing in flight may still send a request
# once the drain has begun. Closing it at once would lose a request already
# on its way (on a keep-alive connection, or one just accepted), and a
# client never resends a POST.
GRACE = 1.0

# An idle keep-alive connection is closed after this long.
IDLE_TIMEOUT = 60.0

GENERATION = os.environ.get("BATON_GENERATION", "none")


def log(msg):
    """One line on stderr in one write: baton and the other workers share it."""
    os.write(2, ("asyncio server: pid %d %s\n" % (os.getpid(), msg)).encode())


def inherited_socket():
    """Returns the socket passed as fd 3, or None without one."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None  # the variables, if any, were meant for another process
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # nothing we start may take them for its own
    if count < 1:
        return None
    sock = socket.socket(fileno=3)
    sock.set_inheritable(False)
    return sock


def sd_notify(state):
    """Sends state (such as "READY=1") to baton; a no-op without it."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr[0] == "@":
        addr = "\0" + addr[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())


def answer(method, target, body):
    """The app: what to send back for one request."""
    return ("gen=%s pid=%d\n" % (GENERATION, os.getpid())).encode()


class Drain:
    """When the drain began, for every connection to see."""

    def __init__(self):
        self.began = None  # the loop's time, once it has
        self.event = asyncio.Event()

    def start(self):
        self.began = asyncio.get_running_loop().time()
        self.event.set()


async def next_request(reader, drain, opened):
    """The head of the next request, or None when the connection is to be
    closed instead: idle for IDLE_TIMEOUT, or silent for GRACE once the
    drain has begun."""
    loop = asyncio.get_running_loop()
    read = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    try:
        if drain.began is None:
            woken = asyncio.ensure_future(drain.event.wait())
            await asyncio.wait({read, woken}, timeout=IDLE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            if read.done():
                return read.result()
            if drain.began is None:
                return None  # idle too long
        # Draining: a request already on its way still gets its answer.
        left = max(drain.began, opened) + GRACE - loop.time()
        if left > 0:
            await asyncio.wait({read}, timeout=left)
        return read.result() if read.done() else None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    finally:
        read.cancel()


async def handle(conn, drain):
    """Serves one connection until it closes or the drain ends it."""
    opened = asyncio.get_running_loop().time()
    reader, writer = await asyncio.open_connection(sock=conn)
    try:
        while True:
            head = await next_request(reader, drain, opened)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            # Read the whole body: what is left of it would be taken for
            # the next request.
            body = await reader.readexactly(int(headers.get("content-length") or 0))
            payload = answer(method, target, body)
            keep = (version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                    and drain.began is None)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (
                len(payload), b"" if keep else b"Connection: close\r\n", payload))
            await writer.drain()
            if not keep:
                return
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return
    finally:
        writer.close()


async def serve(sock):
    loop = asyncio.get_running_loop()
    drain = Drain()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    connections = set()

    def accept():
        # Called by the loop when the socket is readable. Every worker waits
        # on the same socket: another one may have taken the connection.
        for _ in range(64):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            conn.setblocking(False)
            task = loop.create_task(handle(conn, drain))
            connections.add(task)
            task.add_done_callback(connections.discard)

    sock.setblocking(False)
    loop.add_reader(sock.fileno(), accept)
    sd_notify("READY=1")
    log("worker %s of %s, generation %s, serving on %s" % (
        os.environ.get("BATON_WORKER_INDEX", "0"), os.environ.get("BATON_WORKERS", "1"), GENERATION,
        sock.getsockname()[:2]))

    await stop.wait()
    sd_notify("STOPPING=1")
    # Stop accepting. Whatever was accepted already has its task; the
    # kernel queues new connections for the next generation, since baton
    # keeps the socket open.
    loop.remove_reader(sock.fileno())
    sock.close()
    drain.start()
    while connections:
        await asyncio.wait(set(connections))
    log("drained")


def main():
    sock = inherited_socket()
    if sock is None:
        host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000").rpartition(":")
        sock = socket.create_server((host, int(port)))
    asyncio.run(serve(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
