package format

import "math"

// Version 3: portable images (issue 12). With --embed-files every file
// the tree maps (the executable, its libraries, other mapped files) is
// stored once in the data section; restore maps the copy where the file
// at the path is missing or differs.

// EmbeddedFile is one mapped file stored in the image. VMAs name it by
// FileRef.Embedded. Content runs carry the file's bytes (Addr is the file
// offset); holes are not stored (restore sizes the copy first).
type EmbeddedFile struct {
	ID      int       `json:"id"`
	Path    string    `json:"path"`
	Dev     uint64    `json:"dev"`
	Inode   uint64    `json:"inode"`
	Size    int64     `json:"size"`
	MtimeNS int64     `json:"mtime_ns"`
	Mode    uint32    `json:"mode"` // permission bits (st_mode & 07777)
	Content []DataRun `json:"content,omitempty"`
}

// validateEmbedded checks the embedded files: positive unique IDs, a
// path, a size that fits and runs inside the file and the data section.
func (img *Image) validateEmbedded(seen map[int]bool) error {
	for _, e := range img.Objects.Embedded {
		if e.ID <= 0 || seen[e.ID] {
			return corrupt("embedded file ID %d is not positive or appears twice", e.ID)
		}
		seen[e.ID] = true
		if e.Path == "" || e.Size < 0 || e.Mode&^0o7777 != 0 {
			return corrupt("embedded file %d: path %q, size %d, mode %#o", e.ID, e.Path, e.Size, e.Mode)
		}
		size := uint64(e.Size)
		for _, r := range e.Content {
			if r.Addr > size || r.Len > size-r.Addr || r.Addr > math.MaxInt64 {
				return corrupt("embedded file %d: run %#x+%#x beyond its %d bytes", e.ID, r.Addr, r.Len, e.Size)
			}
			if err := img.inData(r); err != nil {
				return corrupt("embedded file %d: %v", e.ID, err)
			}
		}
	}
	return nil
}

// embeddedRuns are the data runs of the embedded files (disjointRuns).
func (img *Image) embeddedRuns() []DataRun {
	var runs []DataRun
	for _, e := range img.Objects.Embedded {
		runs = append(runs, e.Content...)
	}
	return runs
}
