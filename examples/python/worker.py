#!/usr/bin/env python3
"""A baton worker in Python with nothing but the standard library.

It speaks the worker contract by hand:

- the listening socket is fd 3, announced by LISTEN_FDS, and meant for us
  only if LISTEN_PID is our own PID (systemd's socket activation);
- READY=1 goes to the unix datagram socket named by NOTIFY_SOCKET once we
  accept (sd_notify; a leading '@' names an abstract socket);
- SIGTERM drains: stop accepting, answer every request that comes on a
  connection already accepted (with "Connection: close"), close a
  connection only once it has stayed silent for a moment, exit 0.

Under baton, from the repository root:

    baton --pidfile /tmp/pyworker.pid --listen http=tcp://127.0.0.1:8000 -- python3 examples/python/worker.py
    curl http://127.0.0.1:8000/            # gen=1 pid=...
    kill -HUP $(cat /tmp/pyworker.pid)     # gen=2, a new pid, no request lost

Without baton it binds its own address (default 127.0.0.1:8000):

    python3 examples/python/worker.py 127.0.0.1:8000
"""

import http.server
import os
import select
import signal
import socket
import sys
import threading
import time

# How long a drain waits for a connection that was accepted but has not
# sent its first request yet. Closing it unanswered would lose that
# request: clients do not retry the first request of a new connection.
NEW_CONN_GRACE = 5.0

# How long a drain waits for the next request of a keep-alive connection
# between two requests. It may be on its way, or in the kernel's buffer
# already: closing the connection at once loses it, and a client never
# resends a POST (3 failed POSTs in 24 reloads under the tests' load).
IDLE_GRACE = 1.0

# An idle keep-alive connection is closed after this long.
IDLE_TIMEOUT = 60.0

GENERATION = os.environ.get("BATON_GENERATION", "none")


def log(msg):
    """One line on stderr in a single write: baton and other workers share
    the stream, and a line written in pieces can be split by theirs."""
    os.write(2, ("worker.py: gen %s pid %d %s\n" % (GENERATION, os.getpid(), msg)).encode())


def inherited_socket():
    """Returns the socket passed as fd 3, or None without one."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None  # the variables, if any, were meant for another process
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    # Like sd_listen_fds(1): whatever we start must not take them for its own.
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count < 1:
        return None
    sock = socket.socket(fileno=3)  # family and type are read from the fd
    sock.set_inheritable(False)
    return sock


def sd_notify(state):
    """Sends state (such as "READY=1") to baton; a no-op without it."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = IDLE_TIMEOUT  # for reads within a request
    # Headers and body in one send, flushed after each request: written
    # apart, the body waits for the client's delayed ACK of the headers
    # (Nagle's algorithm), 40 ms per request on a keep-alive connection.
    wbufsize = -1

    def handle(self):
        self.close_connection = True
        first = True
        while self.server.wait_for_request(self, first):
            self.handle_one_request()
            first = False
            if self.close_connection:
                break

    def has_input(self):
        """Whether the next request (or the client's close) can be read now."""
        poller = select.poll()
        poller.register(self.connection, select.POLLIN)
        if poller.poll(0):
            return True
        # Bytes the client sent earlier may already be in our buffer.
        self.connection.settimeout(0)
        try:
            return len(self.rfile.peek(1)) > 0
        finally:
            self.connection.settimeout(self.timeout)

    def do_GET(self):
        body = ("gen=%s pid=%d\n" % (GENERATION, os.getpid())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if self.server.draining.is_set():
            self.send_header("Connection", "close")  # also ends handle()
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        # Read the body first: what is left of it would be taken for the
        # next request on a keep-alive connection.
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def log_message(self, format, *args):
        pass  # no line per request


class Server(http.server.ThreadingHTTPServer):
    # server_close() joins the request threads, so every accepted request is
    # answered before the process exits. It only joins threads that are not
    # daemons, and ThreadingHTTPServer makes daemons by default.
    daemon_threads = False
    block_on_close = True

    def __init__(self, sock):
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()  # the one TCPServer made; ours is already listening
        self.socket = sock
        self.server_address = sock.getsockname()
        self.draining = threading.Event()
        self.drain_started = 0.0
        # Readable once the drain begins: wakes every connection waiting
        # for its next request.
        self.wake_r, self.wake_w = os.pipe()

    def wait_for_request(self, handler, first):
        """Waits until handler's connection has a request to read. Returns
        False when the connection is to be closed instead: silent since the
        drain began for IDLE_GRACE between two requests, or for
        NEW_CONN_GRACE before its first, or idle for IDLE_TIMEOUT.

        The connection thread decides this itself, after looking for input,
        so a request that has arrived is always answered, with
        "Connection: close" once the drain has begun. A keep-alive client
        under load sends its next request well within IDLE_GRACE; one that
        stays silent longer is closed, as an idle timeout would."""
        deadline = time.monotonic() + IDLE_TIMEOUT
        while True:
            if handler.has_input():
                return True
            poller = select.poll()
            poller.register(handler.connection, select.POLLIN)
            if self.draining.is_set():
                grace = NEW_CONN_GRACE if first else IDLE_GRACE
                deadline = min(deadline, self.drain_started + grace)
            else:
                poller.register(self.wake_r, select.POLLIN)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(left * 1000)

    def drain(self):
        """Starts the connections' graces; server_close() then waits for
        every connection to end."""
        self.drain_started = time.monotonic()
        self.draining.set()
        os.write(self.wake_w, b"x")


def main():
    sock = inherited_socket()
    if sock is None:
        host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000").rpartition(":")
        sock = socket.create_server((host, int(port)))
    # Several generations accept on this one socket during a handoff: a
    # connection another one took must not leave our accept() blocked.
    sock.setblocking(False)

    # The signals are taken by sigwait below, in this thread only; the
    # threads started from here on inherit the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})

    httpd = Server(sock)
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    sd_notify("READY=1")
    log("serving on %s" % (sock.getsockname()[:2],))

    signal.sigwait({signal.SIGTERM, signal.SIGINT})

    sd_notify("STOPPING=1")
    # shutdown() waits for serve_forever to return, so it must not run in
    # the thread that serves. Nothing is accepted after it; the kernel keeps
    # queueing connections on the socket, which baton and the next
    # generation still hold, so closing our copy refuses nothing.
    httpd.shutdown()
    serving.join()
    sock.close()
    httpd.drain()
    httpd.server_close()  # waits for the requests in flight
    log("drained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
