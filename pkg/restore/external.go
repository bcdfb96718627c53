package restore

import (
	"fmt"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/external"
)

// openExternals opens what stands in for each descriptor that was shared
// with a process outside the checkpoint (pkg/objects/external): chpox's
// own stdin, stdout or stderr, or what the user chose. The processes take
// them through pidfd_getfd like any object of chpox's.
func (o *objects) openExternals(img *format.Image) error {
	return eachExternal(img, func(p *format.Process, f format.File, e format.External) error {
		file, err := external.Open(e, f, o.opt.Externals)
		if err == nil {
			o.externals[[2]int{p.PID, f.FD}] = file
		}
		return err
	})
}

// checkExternals refuses, before anything starts, an image with external
// descriptors the user gave nothing for.
func checkExternals(img *format.Image, opt Options) error {
	return eachExternal(img, func(_ *format.Process, f format.File, e format.External) error {
		return external.Check(e, f, opt.Externals)
	})
}

// eachExternal calls fn for every external descriptor of the image with
// its record; an error names the process.
func eachExternal(img *format.Image, fn func(*format.Process, format.File, format.External) error) error {
	byID := map[int]format.External{}
	for _, e := range img.Objects.Externals {
		byID[e.ID] = e
	}
	for _, p := range img.Processes {
		for _, f := range p.Files {
			if f.Kind != format.FileExternal {
				continue
			}
			if err := fn(p, f, byID[f.External]); err != nil {
				return fmt.Errorf("pid %d: %w", p.PID, err)
			}
		}
	}
	return nil
}
