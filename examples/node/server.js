// A plain Node.js HTTP server for baton; drain.js does the baton part.
//   baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- node server.js
// Without baton it binds the address given as its argument:
//   node server.js 127.0.0.1:3000
'use strict';
const http = require('http');
const serve = require('./drain');

const gen = process.env.BATON_GENERATION || 'none';

const server = http.createServer((req, res) => {
  let size = 0;
  req.on('data', (chunk) => { size += chunk.length; });
  req.on('end', () => {
    res.setHeader('Content-Type', 'text/plain');
    res.end(`gen=${gen} pid=${process.pid} read=${size}\n`);
  });
});
serve(server, process.argv[2] || '127.0.0.1:3000');
