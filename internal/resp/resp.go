// Package resp is the least of a Redis client the tests and the benchmark
// need: RESP2 over one TCP connection, with pipelining, and no reconnects
// (a test that checks that a connection survives a checkpoint must see
// every error, never have it papered over by a retry). It is not a general
// client: no pooling, no pub/sub, no RESP3.
package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Conn is one connection to a Redis server. It is not safe for concurrent use.
type Conn struct {
	net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

// Dial connects to addr (host:port) within timeout.
func Dial(addr string, timeout time.Duration) (*Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 64<<10)}, nil
}

// Error is an error reply ("-ERR ...") from the server.
type Error string

func (e Error) Error() string { return "redis: " + string(e) }

// Send buffers one command; Flush sends what is buffered.
func (c *Conn) Send(args ...string) error {
	fmt.Fprintf(c.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.w, "$%d\r\n%s\r\n", len(a), a)
	}
	return nil
}

// Flush writes the buffered commands to the server.
func (c *Conn) Flush() error { return c.w.Flush() }

// Do sends one command and reads its reply.
func (c *Conn) Do(args ...string) (any, error) {
	c.Send(args...)
	if err := c.Flush(); err != nil {
		return nil, err
	}
	return c.Reply()
}

// maxBulk bounds what a reply may make us allocate (Redis's own limit is 512 MiB).
const maxBulk = 512 << 20

// Reply reads one reply: a string (simple or bulk), an int64, nil (a null
// bulk or array), a []any, or an Error as the error.
func (c *Conn) Reply() (any, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("redis: malformed reply line %q", line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return body, nil
	case '-':
		return nil, Error(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$', '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxBulk {
			return nil, fmt.Errorf("redis: bad length in %q", line)
		}
		if n == -1 {
			return nil, nil
		}
		if kind == '*' {
			out := make([]any, 0, min(n, 1<<16))
			for i := 0; i < n; i++ {
				v, err := c.Reply()
				var re Error
				if err != nil && !errors.As(err, &re) {
					return nil, err
				}
				out = append(out, v)
			}
			return out, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	}
	return nil, fmt.Errorf("redis: unknown reply type in %q", line)
}

// SetMany sets keys key(0)..key(n-1) to value(i), pipelined in batches of
// 10,000 commands: loading a million keys one round trip at a time would
// take minutes.
func (c *Conn) SetMany(n int, key, value func(int) string) error {
	const batch = 10_000
	for lo := 0; lo < n; lo += batch {
		hi := min(lo+batch, n)
		for i := lo; i < hi; i++ {
			if err := c.Send("SET", key(i), value(i)); err != nil {
				return err
			}
		}
		if err := c.Flush(); err != nil {
			return err
		}
		for i := lo; i < hi; i++ {
			if v, err := c.Reply(); err != nil || v != "OK" {
				return fmt.Errorf("SET %s: %v %w", key(i), v, err)
			}
		}
	}
	return nil
}
