package dump

import (
	"fmt"

	"github.com/chpox/chpox/pkg/format"
)

// unixSockets describes every UNIX domain socket once (pkg/objects/unixsock).
func (pl *plan) unixSockets() error {
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind == format.FileUnix {
				return fmt.Errorf("pid %d: fd %d is a UNIX socket (%s), which chpox cannot checkpoint yet: %w", p.Info.PID, f.FD, f.Path, ErrUnsupported)
			}
		}
	}
	return nil
}
