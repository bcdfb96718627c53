package format

import "sync/atomic"

// Progress counts the data bytes of one image as a dump writes them or a
// restore reads them, for a progress line shown while that runs. It is
// safe for use by one writer and any number of readers.
type Progress struct {
	total, done atomic.Int64
}

// Start sets the number of bytes there are.
func (p *Progress) Start(total int64) {
	if p != nil {
		p.total.Store(total)
	}
}

// Add counts n more bytes done.
func (p *Progress) Add(n int) {
	if p != nil {
		p.done.Add(int64(n))
	}
}

// Now returns the bytes done and the total so far (0 before Start).
func (p *Progress) Now() (done, total int64) {
	return p.done.Load(), p.total.Load()
}
