"""Run app:app with uvicorn on the socket baton passes, draining without
losing a request.

    baton --listen http=tcp://127.0.0.1:8000 --ready accepting --dir examples/uvicorn -- python3 serve.py

`uvicorn --fd 3 app:app` serves the same, but its SIGTERM closes at once
every connection with no request in progress, including one whose next
request is already on its way (a keep-alive connection, or one just
accepted): that request is lost, and a client never resends a POST. This
drain gives those connections a grace first.
"""
import asyncio
import os
import sys

import uvicorn

GRACE = 1.0  # seconds a connection with nothing in flight may still send a request


class Server(uvicorn.Server):
    async def shutdown(self, sockets=None):
        for server in self.servers:
            server.close()  # stop accepting; the socket stays open in baton
        # Every response still to come says "Connection: close", so each
        # connection closes after its next answer: a new request reads the
        # headers its connection took when it opened, and one under way is
        # told by shutdown(), which keeps its connection open until then.
        close = [(b"connection", b"close")]
        state = self.server_state
        state.default_headers = state.default_headers + close
        for conn in list(state.connections):
            conn.default_headers = conn.default_headers + close
            if conn.cycle is not None and not conn.cycle.response_complete:
                conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GRACE
        while state.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        # uvicorn's own shutdown: closes the connections that stayed silent
        # and waits for the responses still in flight.
        await super().shutdown(sockets)


def main():
    activated = os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1
    if activated:
        config = uvicorn.Config("app:app", fd=3)
    else:  # without baton: python3 serve.py [HOST:PORT]
        host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000").rpartition(":")
        config = uvicorn.Config("app:app", host=host, port=int(port))
    Server(config).run()


if __name__ == "__main__":
    main()
