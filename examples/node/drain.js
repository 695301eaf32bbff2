// serve(server, addr): run a Node.js http.Server under baton. It listens
// on the socket baton passes as fd 3 (or binds addr without baton), and on
// SIGTERM drains without losing a request, then exits 0. Copy this file
// next to your server; plain http, Express (app.listen returns the same
// http.Server), anything built on http.Server, and the workers of Node's
// cluster (see cluster.js) work alike.
'use strict';
const cluster = require('cluster');
const fs = require('fs');
const net = require('net');

const GRACE_MS = 1000; // how long a connection between requests may still send one

module.exports = function serve(server, addr) {
  let draining = false;
  const sockets = new Set(); // open connections
  const busy = new Map(); // connection → its response in progress

  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    if (draining) s.setTimeout(GRACE_MS); // accepted just before the drain
  });
  // Registered first, so it runs before the app's handler writes anything.
  server.prependListener('request', (req, res) => {
    const s = req.socket;
    busy.set(s, res);
    res.on('close', () => {
      busy.delete(s);
      if (draining) s.setTimeout(GRACE_MS); // kept open by a response begun before the drain
    });
    if (draining) {
      s.setTimeout(0); // its grace is over: it sent a request
      // Once this response is sent the connection closes; the client's
      // next request goes to a new connection, which the new generation
      // accepts.
      res.setHeader('Connection', 'close');
    }
  });

  process.once('SIGTERM', () => {
    draining = true;
    // Responses still to be written close their connection.
    for (const res of busy.values()) if (!res.headersSent) res.setHeader('Connection', 'close');
    // Stop accepting; the socket stays open in baton and the next
    // generation. Not http.Server.close(): since Node 19 it also destroys
    // every connection that looks idle, including one just accepted whose
    // request is still on its way and a keep-alive connection whose next
    // request is in the kernel, and a client never resends a POST.
    // net.Server's close only stops accepting; its callback runs once the
    // last connection has closed.
    net.Server.prototype.close.call(server, () => process.exit(0));
    // A connection between requests gets GRACE_MS to send one more, which
    // is answered as above; a socket timeout makes Node destroy it.
    for (const s of sockets) if (!busy.has(s)) s.setTimeout(GRACE_MS);
  });

  if (passedSocket()) {
    server.listen({ fd: 3 });
  } else {
    const i = addr.lastIndexOf(':');
    server.listen(Number(addr.slice(i + 1)), addr.slice(0, i));
  }
};

// passedSocket reports whether fd 3 is the socket baton passed. It is when
// LISTEN_PID is this process (systemd's rule), and also when LISTEN_PID is
// its parent and this is a cluster worker, whose listen() the primary
// does on the primary's own fd 3 (a worker's fd 3 is its channel to the
// primary), or a child its parent started with fd 3 passed on.
function passedSocket() {
  if (!(Number(process.env.LISTEN_FDS) >= 1)) return false;
  const pid = process.env.LISTEN_PID;
  if (pid === String(process.pid)) return true;
  if (pid !== String(process.ppid)) return false;
  if (cluster.isWorker) return true;
  try {
    return fs.fstatSync(3).isSocket();
  } catch {
    return false;
  }
}
