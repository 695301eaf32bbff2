"""Run app.app with aiohttp on the socket baton passes, draining without
losing a request.

    baton --listen http=tcp://127.0.0.1:8080 --dir examples/aiohttp -- python3 serve.py

`web.run_app(app, sock=socket.socket(fileno=3))` serves the same, but its
SIGTERM closes at once every connection with no request in progress,
including one whose next request is already on its way (a keep-alive
connection, or one just accepted): that request is lost, and a client
never resends a POST. This drain stops accepting, makes every response
from then on say "Connection: close", gives the connections GRACE to send
what they still have, and only then runs aiohttp's shutdown, which waits
for the requests in flight.

Without baton it binds the address given as its argument:

    python3 serve.py 127.0.0.1:8080
"""
import asyncio
import os
import signal
import socket
import sys

from aiohttp import web

from app import app

GRACE = 1.0  # seconds a connection with nothing in flight may still send a request
SHUTDOWN_TIMEOUT = 25.0  # for the requests in flight; below baton's --drain-timeout


def inherited_socket():
    """The socket baton passes as fd 3, or None without one."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for the programs we start
    return socket.socket(fileno=3)


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


class Acceptor:
    """Accepts connections on sock and serves each with protocol_factory
    (an aiohttp web.Server) until stop().

    Not loop.create_server: asyncio's Server.close() drops a connection it
    has accepted but not yet set up, and the request on it (2 failed POSTs
    in 24 reloads). Nor a task awaiting loop.sock_accept, whose
    cancellation can drop a connection it has just accepted. This reader
    callback runs in the loop's thread, so stop() falls between two
    accepts."""

    def __init__(self, sock, protocol_factory):
        self.sock = sock
        self.factory = protocol_factory
        self.loop = asyncio.get_running_loop()
        self.setting_up = set()  # connections accepted and not yet served
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self.accept)

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # another generation took it, or none is left
            conn.setblocking(False)
            task = self.loop.create_task(self.loop.connect_accepted_socket(self.factory, conn))
            self.setting_up.add(task)
            task.add_done_callback(self.setting_up.discard)

    async def stop(self):
        """Stops accepting, and returns once every connection accepted is
        being served."""
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        await asyncio.gather(*self.setting_up, return_exceptions=True)


async def serve(app, sock):
    draining = False

    async def close_when_draining(request, response):
        if draining:
            # The headers are made before this hook runs: force_close()
            # alone would close the connection without saying so.
            response.headers["Connection"] = "close"
            response.force_close()

    app.on_response_prepare.append(close_when_draining)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    loop = asyncio.get_running_loop()
    acceptor = Acceptor(sock, runner.server)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sd_notify("READY=1")

    await stop.wait()
    sd_notify("STOPPING=1")
    draining = True
    # Stop accepting. The socket stays open in baton and the next
    # generation, so the kernel keeps queueing connections for them.
    await acceptor.stop()
    deadline = loop.time() + GRACE
    while runner.server.connections and loop.time() < deadline:
        await asyncio.sleep(0.05)
    # aiohttp's shutdown: closes the connections that stayed silent, and
    # waits for the requests still in flight.
    await runner.server.shutdown(SHUTDOWN_TIMEOUT)
    await runner.cleanup()


def main():
    sock = inherited_socket()
    if sock is None:
        host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080").rpartition(":")
        sock = socket.create_server((host, int(port)))
    asyncio.run(serve(app, sock))


if __name__ == "__main__":
    main()
