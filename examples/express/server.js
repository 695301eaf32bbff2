// An Express app for baton; ../node/drain.js does the baton part.
//   baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- node server.js
// (Debian's node-express lives in /usr/share/nodejs: NODE_PATH=/usr/share/nodejs
// for a Node.js that does not look there.)
'use strict';
const http = require('http');
const express = require('express');
const serve = require('../node/drain');

const gen = process.env.BATON_GENERATION || 'none';
const app = express();
app.use(express.raw({ type: '*/*' }));
app.all('/', (req, res) => {
  const size = Buffer.isBuffer(req.body) ? req.body.length : 0;
  res.type('text/plain').send(`gen=${gen} pid=${process.pid} read=${size}\n`);
});
serve(http.createServer(app), process.argv[2] || '127.0.0.1:3000');
