"""An ASGI app for `uvicorn --fd 3 uvicorn_app:app`.

Its lifespan startup waits until stdin closes, as an app that loads
something at startup would: uvicorn starts serving the socket only after
startup completes, so a test can check that nothing waits on it before.
"""
import asyncio
import sys


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                print("holding", flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello\n"})
