// Node.js's cluster under baton: WORKERS processes serve baton's socket,
// each through drain.js.
//   baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- node cluster.js
// baton's worker is the primary: it forks the cluster's workers, passes the
// drain signal on to them, and exits 0 once they have all drained. Without
// baton it binds the address given as its argument:
//   node cluster.js 127.0.0.1:3000
'use strict';
const cluster = require('cluster');
const http = require('http');
const serve = require('./drain');

const WORKERS = Number(process.env.WORKERS) || 2;
const gen = process.env.BATON_GENERATION || 'none';

if (cluster.isPrimary) {
  // Each worker accepts on the socket itself. With the default
  // (round-robin), the primary accepts every connection and hands it to a
  // worker, and closes, unanswered, those it holds when the last worker
  // stops listening.
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  let draining = false;
  let alive = 0;
  const fork = () => { alive++; cluster.fork(); };
  for (let i = 0; i < WORKERS; i++) fork();
  cluster.on('exit', (worker, code, signal) => {
    alive--;
    if (draining) {
      if (alive === 0) process.exit(0);
      return;
    }
    console.error(`cluster.js: worker ${worker.process.pid} died (${signal || code}); starting another`);
    fork();
  });
  // baton's drain signal reaches the primary only.
  process.once('SIGTERM', () => {
    draining = true;
    for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
  });
} else {
  const server = http.createServer((req, res) => {
    let size = 0;
    req.on('data', (chunk) => { size += chunk.length; });
    req.on('end', () => {
      res.setHeader('Content-Type', 'text/plain');
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/slow') { // answers after ?d=SECONDS: a drain lets it finish
        const d = parseFloat(url.searchParams.get('d') || '1');
        console.error(`cluster.js: slow request started pid=${process.pid}`);
        setTimeout(() => res.end(`slow done after ${d}s gen=${gen} pid=${process.pid}\n`), d * 1000);
        return;
      }
      res.end(`gen=${gen} pid=${process.pid} read=${size}\n`);
    });
  });
  serve(server, process.argv[2] || '127.0.0.1:3000');
}
