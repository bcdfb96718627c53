package vmadump

import (
	"fmt"
	"os"
)

// An incremental checkpoint (a Tracker kept from one checkpoint to the
// next, chpox run) takes every page that was not written since the last
// image from that image: the write tracking says which, and the CRC of
// each page, kept from the last write, lets the new data section's CRC be
// made without reading them (format.Combine).

// Base is the last image of a series, open: it is read (or its blocks
// shared) through this descriptor, whatever its name holds meanwhile.
type Base struct {
	File *os.File
	Data int64 // file offset of its data section
	size int64
	mod  int64 // mtime, ns
}

// NewBase records f, the image just committed, whose data section starts
// at data.
func NewBase(f *os.File, data int64) (*Base, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return &Base{File: f, Data: data, size: st.Size(), mod: st.ModTime().UnixNano()}, nil
}

// Intact tells whether the file is as it was committed: nobody wrote to
// it since (its pages would no longer be what the index says).
func (b *Base) Intact() error {
	st, err := b.File.Stat()
	if err != nil {
		return err
	}
	if st.Size() != b.size || st.ModTime().UnixNano() != b.mod {
		return fmt.Errorf("the previous image %s was changed since chpox wrote it", b.File.Name())
	}
	return nil
}

// Close lets the file go.
func (b *Base) Close() error { return b.File.Close() }

// entry is where a page is in the base image, with its CRC-32C.
type entry struct {
	off uint64 // data section offset + 1; 0: not there
	sum uint32
}

// pageIndex maps page addresses to entries, by 2 MiB block (as pageTable).
type pageIndex map[uint64]*[512]entry

func (pi pageIndex) lookup(p uint64, c *indexCache) (entry, bool) {
	var b *[512]entry
	if c.b != nil && c.key == p>>21 {
		b = c.b
	} else {
		b = pi[p>>21]
		c.key, c.b = p>>21, b
	}
	if b == nil || b[p>>12&511].off == 0 {
		return entry{}, false
	}
	e := b[p>>12&511]
	e.off--
	return e, true
}

type indexCache struct {
	key uint64
	b   *[512]entry
}

func (pi pageIndex) set(p, off uint64, sum uint32) {
	b := pi[p>>21]
	if b == nil {
		b = new([512]entry)
		pi[p>>21] = b
	}
	b[p>>12&511] = entry{off: off + 1, sum: sum}
}

// forget drops the entries of [start, end): an area registered anew was
// not tracked since the base, so its old entries say nothing of it.
func (pi pageIndex) forget(start, end uint64) {
	for p := start; p < end; p = (p>>21 + 1) << 21 {
		b := pi[p>>21]
		if b == nil {
			continue
		}
		for q := p; q < end && q>>21 == p>>21; q += pageSize {
			b[q>>12&511] = entry{}
		}
	}
}
