// httpserver is a net/http server for the TCP tests: it listens on -addr
// (port 0: any), prints "listening PORT", and answers GET /n?i=K with
// "reply K to REMOTE (conn C)", C counting the connections it accepted, so
// a client can tell that its connection is the same one after a restore.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
)

type connKey struct{}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	reusePort := flag.Bool("reuseport", false, "set SO_REUSEPORT on the listener")
	flag.Parse()
	lc := net.ListenConfig{}
	// Go listens with MPTCP by default since 1.24 where the kernel has it;
	// chpox checkpoints plain TCP only.
	lc.SetMultipathTCP(false)
	if *reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	network := "tcp"
	if len(flag.Args()) > 0 {
		network = flag.Arg(0)
	}
	l, err := lc.Listen(context.Background(), network, *addr)
	if err != nil {
		fmt.Println("FAIL listen:", err)
		os.Exit(1)
	}
	fmt.Printf("listening %d\n", l.Addr().(*net.TCPAddr).Port)
	var conns atomic.Int64
	srv := &http.Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, conns.Add(1))
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "reply %s to %s (conn %d)\n", r.URL.Query().Get("i"), r.RemoteAddr, r.Context().Value(connKey{}))
		}),
	}
	fmt.Println("FAIL serve:", srv.Serve(l))
	os.Exit(1)
}
