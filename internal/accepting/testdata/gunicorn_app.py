"""A WSGI app for gunicorn with LISTEN_FDS.

Each worker imports it before it serves; the import waits until stdin
closes, so a test can check that the arbiter and the booting workers,
which all hold the socket, do not count as waiting on it.
"""
import sys

print("holding", flush=True)
sys.stdin.read()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]
