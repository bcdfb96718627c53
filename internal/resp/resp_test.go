package resp

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestReplies feeds every reply type through a fake server.
func TestReplies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		r := bufio.NewReader(s)
		buf := make([]byte, len("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"))
		if _, err := io.ReadFull(r, buf); err == nil {
			got <- string(buf)
		}
		s.Write([]byte("+OK\r\n-ERR no\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*3\r\n:1\r\n$1\r\nx\r\n*-1\r\n"))
	}()
	c, err := Dial(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Do("GET", "k"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", <-got); diff != "" {
		t.Errorf("command (-want +got):\n%s", diff)
	}
	if _, err := c.Reply(); err != Error("ERR no") {
		t.Errorf("error reply: %v", err)
	}
	for _, want := range []any{int64(42), "hello", nil, []any{int64(1), "x", nil}} {
		v, err := c.Reply()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, v); diff != "" {
			t.Errorf("reply (-want +got):\n%s", diff)
		}
	}
}
