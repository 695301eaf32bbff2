// A plain Node.js HTTP server for baton: listens on the socket baton
// passes as fd 3, and drains on SIGTERM without losing a request.
//
//   baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- node server.js
//
// Without baton it binds the address given as its argument:
//   node server.js 127.0.0.1:3000
'use strict';
const http = require('http');
const net = require('net');

const gen = process.env.BATON_GENERATION || 'none';
const activated = process.env.LISTEN_PID === String(process.pid) && Number(process.env.LISTEN_FDS) >= 1;

let draining = false;
const sockets = new Set(); // open connections
const busy = new Set(); // connections with a request in progress

const server = http.createServer((req, res) => {
  busy.add(req.socket);
  res.on('close', () => busy.delete(req.socket));
  if (draining) req.socket.setTimeout(0); // the wait for this request is over
  let size = 0;
  req.on('data', (chunk) => { size += chunk.length; });
  req.on('end', () => {
    // While draining, every response closes its connection: the client's
    // next request goes to a new connection, which the new generation
    // accepts.
    if (draining) res.setHeader('Connection', 'close');
    res.setHeader('Content-Type', 'text/plain');
    res.end(`gen=${gen} pid=${process.pid} read=${size}\n`);
  });
});

server.on('connection', (s) => {
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
  if (draining) s.setTimeout(1000); // accepted just before the drain
});

process.once('SIGTERM', () => {
  draining = true;
  // Stop accepting; the socket stays open in baton and the next
  // generation. Not http.Server.close(): since Node 19 it also destroys
  // every connection that looks idle, including one just accepted whose
  // request is still on its way and a keep-alive connection whose next
  // request is in the kernel, and a client never resends a POST.
  // net.Server's close only stops accepting; its callback runs once the
  // last connection has closed.
  net.Server.prototype.close.call(server, () => process.exit(0));
  // A connection with a request in flight closes after its response (see
  // above). One between requests gets a second to send its next request,
  // which is answered the same way; a client silent that long is closed
  // (a socket timeout makes Node destroy it).
  for (const s of sockets) if (!busy.has(s)) s.setTimeout(1000);
});

if (activated) {
  server.listen({ fd: 3 });
} else {
  const addr = process.argv[2] || '127.0.0.1:3000';
  const i = addr.lastIndexOf(':');
  server.listen(Number(addr.slice(i + 1)), addr.slice(0, i));
}
