package dump

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
	"github.com/chpox/chpox/pkg/procinfo"
)

// sockets gives each socket the kind of its family and lets the family
// describe it; families chpox cannot rebuild are refused by name.
func (pl *plan) sockets() error {
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind != procinfo.FileSocket {
				continue
			}
			kind, err := socketKind(p.Info.PID, f.FD)
			if err != nil {
				return fmt.Errorf("pid %d: fd %d (%s): %w", p.Info.PID, f.FD, f.Path, err)
			}
			f.Kind = kind
		}
	}
	if err := pl.unixSockets(); err != nil {
		return err
	}
	if err := pl.netlinkSockets(); err != nil {
		return err
	}
	return pl.inetSockets()
}

func socketKind(pid, fd int) (string, error) {
	cp, err := objects.Dup(pid, fd)
	if err != nil {
		return "", err
	}
	defer cp.Close()
	family, typ, err := objects.SocketFamily(cp)
	if err != nil {
		return "", err
	}
	switch {
	case family == unix.AF_UNIX:
		return format.FileUnix, nil
	case family == unix.AF_NETLINK:
		return format.FileNetlink, nil
	case (family == unix.AF_INET || family == unix.AF_INET6) && (typ == unix.SOCK_STREAM || typ == unix.SOCK_DGRAM):
		return format.FileInet, nil
	}
	return "", fmt.Errorf("a %s %s socket, which chpox cannot checkpoint: %w", objects.FamilyName(family), objects.TypeName(typ), ErrUnsupported)
}

// eachSocket calls describe once for every open file description of the
// sockets of kind (a socket cannot be reopened: one record per
// description) and gives every fd of it the ID describe returned.
func (pl *plan) eachSocket(kind string, describe func(p *proc, f *procinfo.OpenFile) (int, error)) error {
	ids := map[int]int{} // Desc -> socket ID
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind != kind {
				continue
			}
			id, ok := ids[f.Desc]
			if !ok {
				var err error
				if id, err = describe(p, f); err != nil {
					return err
				}
				ids[f.Desc] = id
			}
			f.Socket = id
		}
	}
	return nil
}
