// node testdata/fsloop.js: reads a file asynchronously (through libuv's
// thread pool, or its io_uring under UV_USE_IO_URING=1) every 10ms and
// prints "ready" once, then "alive N" after each read.
'use strict';
const fs = require('fs');
let n = 0;
function again() {
  fs.readFile(__filename, (err) => {
    if (err) { console.log(`FAIL ${err}`); process.exit(1); }
    if (n === 0) console.log('ready');
    console.log(`alive ${++n}`);
    setTimeout(again, 10);
  });
}
again();
