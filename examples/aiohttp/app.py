"""An aiohttp app; serve.py runs it under baton.

/slow?d=SECONDS answers after that long: a reload lets it finish.
"""
import asyncio
import os
import sys

from aiohttp import web

GEN = os.environ.get("BATON_GENERATION", "none")


async def hello(request):
    size = len(await request.read())
    return web.Response(text="gen=%s pid=%d read=%d\n" % (GEN, os.getpid(), size))


async def slow(request):
    d = float(request.query.get("d", "1").rstrip("s"))
    sys.stderr.write("app.py: slow request started pid=%d\n" % os.getpid())
    sys.stderr.flush()
    await asyncio.sleep(d)
    return web.Response(text="slow done after %gs gen=%s pid=%d\n" % (d, GEN, os.getpid()))


app = web.Application()
app.add_routes([web.route("*", "/slow", slow), web.route("*", "/", hello)])
