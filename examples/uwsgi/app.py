"""A WSGI app for uWSGI under baton.

    baton --listen http=tcp://127.0.0.1:8000 --drain-signal HUP --dir examples/uwsgi -- \
        uwsgi --plugin python3 --protocol http --add-header 'Connection: close' \
              --wsgi-file app.py --master --processes 2 --exit-on-reload

- The socket: uWSGI takes fd 3 from LISTEN_FDS by itself ("SystemD socket
  activation detected"); --protocol http makes it speak HTTP there. Do not
  name the socket again with --http-socket: uWSGI would then hold fd 3
  twice, once as an uwsgi-protocol socket.
- READY=1: uWSGI's master sends it once its workers are spawned.
- The drain: HUP is uWSGI's graceful reload (each worker finishes its
  request), and --exit-on-reload makes it exit instead of starting anew.
  TERM, baton's default, is a brutal reload for uWSGI: it cuts every
  request in flight.
- Keep-alive: uWSGI's http protocol closes each connection after its
  response without saying so, and a client that sends its next request on
  it loses that request (a few POSTs a second under keep-alive load, reload
  or not): 'Connection: close' tells it.

/slow?d=SECONDS answers after that long: a reload lets it finish.
"""
import os
import sys
import time
from urllib.parse import parse_qs

GEN = os.environ.get("BATON_GENERATION", "none")


def application(environ, start_response):
    size = len(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
    if environ.get("PATH_INFO") == "/slow":
        d = float(parse_qs(environ.get("QUERY_STRING", "")).get("d", ["1"])[0].rstrip("s"))
        sys.stderr.write("app.py: slow request started pid=%d\n" % os.getpid())
        sys.stderr.flush()
        time.sleep(d)
        body = "slow done after %gs gen=%s pid=%d\n" % (d, GEN, os.getpid())
    else:
        body = "gen=%s pid=%d read=%d\n" % (GEN, os.getpid(), size)
    body = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
