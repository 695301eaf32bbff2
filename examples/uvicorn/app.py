"""An ASGI app for uvicorn under baton.

    baton --listen http=tcp://127.0.0.1:8000 --ready accepting --dir examples/uvicorn -- uvicorn --fd 3 app:app
"""
import os

GEN = os.environ.get("BATON_GENERATION", "none")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = f"gen={GEN} pid={os.getpid()} read={size}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
