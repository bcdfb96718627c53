package dump

import (
	"fmt"

	"github.com/chpox/chpox/pkg/format"
)

// inetSockets describes every TCP and UDP socket once (pkg/objects/inet).
func (pl *plan) inetSockets() error {
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind == format.FileInet {
				return fmt.Errorf("pid %d: fd %d is a TCP/UDP socket (%s), which chpox cannot checkpoint yet: %w", p.Info.PID, f.FD, f.Path, ErrUnsupported)
			}
		}
	}
	return nil
}
