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
	byID := map[int]format.External{}
	for _, e := range img.Objects.Externals {
		byID[e.ID] = e
	}
	for _, p := range img.Processes {
		for _, f := range p.Files {
			if f.Kind != format.FileExternal {
				continue
			}
			file, err := external.Open(byID[f.External], f, o.opt.Externals)
			if err != nil {
				return fmt.Errorf("pid %d: %w", p.PID, err)
			}
			o.externals[[2]int{p.PID, f.FD}] = file
		}
	}
	return nil
}

// checkExternals refuses, before anything starts, an image with external
// descriptors the user gave nothing for.
func checkExternals(img *format.Image, opt Options) error {
	byID := map[int]format.External{}
	for _, e := range img.Objects.Externals {
		byID[e.ID] = e
	}
	for _, p := range img.Processes {
		for _, f := range p.Files {
			if f.Kind != format.FileExternal {
				continue
			}
			if err := external.Check(byID[f.External], f, opt.Externals); err != nil {
				return fmt.Errorf("pid %d: %w", p.PID, err)
			}
		}
	}
	return nil
}
