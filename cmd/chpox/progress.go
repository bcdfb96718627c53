package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

func quietFlag() cli.Flag {
	return &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors: no progress, no summary"}
}

// say prints chpox's informational lines, unless --quiet.
func say(c *cli.Context) io.Writer {
	if c.Bool("quiet") {
		return io.Discard
	}
	return os.Stderr
}

// progressDelay: short dumps and restores show no progress line at all.
// CHPOX_TEST_PROGRESS_DELAY (a duration) lets a test see one in a short run.
var progressDelay = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("CHPOX_TEST_PROGRESS_DELAY")); err == nil {
		return d
	}
	return 500 * time.Millisecond
}()

// showProgress draws, on a terminal at stderr and unless --quiet, one line
// of what an image's data has been copied so far, its rate and the time
// left, updated four times a second; the returned function erases it.
func showProgress(c *cli.Context, what string, p *format.Progress) (stop func()) {
	if c.Bool("quiet") || !isTerminal(2) {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		began := time.Now()
		tick := time.NewTicker(min(250*time.Millisecond, max(progressDelay, time.Millisecond)))
		defer tick.Stop()
		drawn := false
		for {
			select {
			case <-done:
				if drawn {
					fmt.Fprint(os.Stderr, "\r\033[K")
				}
				return
			case <-tick.C:
			}
			n, total := p.Now()
			if total <= 0 || time.Since(began) < progressDelay {
				continue
			}
			fmt.Fprintf(os.Stderr, "\r\033[Kchpox: %s", progressLine(what, n, total, time.Since(began)))
			drawn = true
		}
	}()
	return func() { close(done); <-finished }
}

// progressLine: "dump 1234: 1.20 GiB of 4.00 GiB (30%), 850 MB/s, 3s left".
func progressLine(what string, n, total int64, took time.Duration) string {
	line := fmt.Sprintf("%s: %s of %s (%d%%)", what, bytesString(n), bytesString(total), n*100/max(total, 1))
	if secs := took.Seconds(); n > 0 && secs > 0 {
		rate := float64(n) / secs
		left := time.Duration(float64(total-n) / rate * float64(time.Second))
		line += fmt.Sprintf(", %.0f MB/s, %s left", rate/1e6, left.Round(time.Second))
	}
	return line
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}
