"""A WSGI app for gunicorn under baton.

gunicorn already speaks the worker contract: it takes its listening
sockets from LISTEN_FDS when LISTEN_PID is its own PID, sends READY=1 to
NOTIFY_SOCKET once its arbiter has booted, and shuts down gracefully on
SIGTERM (its workers finish their requests). So the app knows nothing of
baton. From the repository root:

    baton --pidfile /tmp/gunicorn.pid --listen http=tcp://127.0.0.1:8000 --dir examples/gunicorn -- \
        gunicorn --workers 2 --graceful-timeout 25 app:app
    curl http://127.0.0.1:8000/            # gen=1 pid=...
    kill -HUP $(cat /tmp/gunicorn.pid)     # a new arbiter and workers, no request lost

Keep gunicorn's --graceful-timeout below baton's --drain-timeout (30s by
default), so gunicorn finishes its own drain before baton stops waiting.
Send HUP to baton, not to gunicorn: gunicorn's own HUP reload keeps its
arbiter, while baton's starts a new one from what is on disk now.
"""

import os


def app(environ, start_response):
    body = ("gen=%s pid=%d\n" % (os.environ.get("BATON_GENERATION", "none"), os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
