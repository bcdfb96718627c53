// node testdata/httpserver.js PORT: an HTTP/1.1 server on 127.0.0.1:PORT
// with keep-alive, for the e2e tests of real programs. Each response says
// how many requests the server has taken (its state: a restored server
// goes on counting from the checkpoint), which connection it came on (the
// server's own number for it: a connection that survived a checkpoint
// keeps its number) and the server's pid. ?delay=MS answers after MS
// milliseconds, so a checkpoint can catch a request half-served.
'use strict';
const http = require('http');

const port = Number(process.argv[2]);
let requests = 0;
let connections = 0;

const server = http.createServer((req, res) => {
  const n = ++requests;
  const url = new URL(req.url, 'http://localhost');
  const delay = Math.min(Number(url.searchParams.get('delay') || 0), 10000);
  const conn = req.socket.chpoxConn;
  setTimeout(() => {
    res.setHeader('Content-Type', 'text/plain');
    res.end(`request ${n} conn ${conn} pid ${process.pid} path ${url.pathname}\n`);
  }, delay);
});
server.on('connection', (sock) => { sock.chpoxConn = ++connections; });
// Keep idle connections (the tests' clients pause across a checkpoint).
server.keepAliveTimeout = 10 * 60 * 1000;
server.headersTimeout = 11 * 60 * 1000;
server.requestTimeout = 0;
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
