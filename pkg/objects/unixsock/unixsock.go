// Package unixsock checkpoints UNIX domain sockets: stream, datagram and
// seqpacket, bound to a path or an abstract name or unnamed, listening
// with the connections that wait in their backlog, connected inside the
// checkpoint with their unread data, shut down, with their options.
//
// Dump asks sock_diag (net/unix/diag.c) for every socket's name, peer,
// waiting connections and shutdown state, and reads each receive queue
// on a pidfd_getfd(2) copy with MSG_PEEK from an SO_PEEK_OFF that walks
// the queue, so nothing is dequeued; the process's own peek offset is put
// back (the copy shares the struct sock). Restore creates every socket in
// chpox (socketpair, or socket + bind + listen + connect + accept), sends
// the queues again from the peer end before any process runs, then
// connects datagram sockets, sets the options and applies shutdown.
//
// It must not let a socket come back half working: descriptors or
// credentials in flight, data in a connection that waits in a backlog,
// messages from senders outside the checkpoint are refused at dump
// (ErrRefused), never dropped. It must not consume or change anything of
// the live socket either: a dump that fails leaves the process as it was.
package unixsock
