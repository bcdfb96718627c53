package dump

import (
	"errors"
	"fmt"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/netlink"
	"github.com/chpox/chpox/pkg/procinfo"
)

// netlinkSockets describes every netlink socket once (pkg/objects/netlink).
func (pl *plan) netlinkSockets() error {
	return pl.eachSocket(format.FileNetlink, func(p *proc, f *procinfo.OpenFile) (int, error) {
		rec, err := netlink.Describe(p.Info.PID, f.FD)
		if errors.Is(err, netlink.ErrQueued) {
			return 0, fmt.Errorf("pid %d: fd %d: a netlink socket (protocol %d) %w: %w", p.Info.PID, f.FD, rec.Protocol, err, ErrUnsupported)
		}
		if err != nil {
			return 0, fmt.Errorf("pid %d: fd %d: netlink socket: %w", p.Info.PID, f.FD, err)
		}
		rec.ID, rec.Inode = len(pl.objects.Netlink)+1, f.Ino
		pl.objects.Netlink = append(pl.objects.Netlink, rec)
		return rec.ID, nil
	})
}
