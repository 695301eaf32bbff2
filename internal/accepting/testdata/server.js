// A Node.js server on the socket passed as fd 3, the way a user runs one
// under baton. It holds fd 3 without listening until its stdin closes, so
// a test can check that holding the socket is not yet waiting on it.
const net = require('net');

process.stdout.write('holding\n');
process.stdin.resume();
process.stdin.on('end', () => {
  net.createServer((c) => c.end('hello\n')).listen({ fd: 3 }, () => {
    process.stdout.write('listening\n');
  });
});
