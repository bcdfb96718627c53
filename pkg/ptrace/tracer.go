// Package ptrace owns every ptrace request chpox makes.
//
// The kernel accepts ptrace requests for a tracee only from the thread that
// attached to it, while Go moves goroutines between threads freely. A Tracer
// is therefore one goroutine locked to its OS thread for its whole life; all
// other code sends it work through Do. Traced children (the restore loader)
// are started from that thread too. Reading and writing tracee memory with
// process_vm_readv/writev is not a ptrace request and may run anywhere.
//
// The package must never leave a tracee changed: every operation that alters
// registers, signal masks or code has an undo that Detach performs.
package ptrace

import (
	"runtime"
)

// Tracer runs functions on one locked OS thread.
type Tracer struct {
	work chan func()
}

// NewTracer starts the tracer thread. It lives as long as the program: a
// locked thread that exits would take its tracees' ptrace links with it.
func NewTracer() *Tracer {
	t := &Tracer{work: make(chan func())}
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked, on purpose
		close(ready)
		for f := range t.work {
			f()
		}
	}()
	<-ready
	return t
}

// Do runs f on the tracer thread and returns its error.
func (t *Tracer) Do(f func() error) error {
	done := make(chan error, 1)
	t.work <- func() { done <- f() }
	return <-done
}
