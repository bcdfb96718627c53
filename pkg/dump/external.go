package dump

import (
	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/external"
	"github.com/chpox/chpox/pkg/procinfo"
)

// outsideHolder returns a process outside the dumped tree that holds the
// pipe or socket whose fd link target is link, or 0.
func (pl *plan) outsideHolder(link string) int {
	if pl.holders == nil {
		pl.holders = external.Holders(pl.tree())
	}
	return pl.holders[link]
}

// markExternal records f as a descriptor whose object stays outside the
// checkpoint (pkg/objects/external); fds of one object share one record.
func (pl *plan) markExternal(f *procinfo.OpenFile, what string, peer, sockType int) {
	f.Kind, f.Socket = format.FileExternal, 0
	for _, e := range pl.objects.Externals {
		if e.Key == f.Path {
			f.External = e.ID
			return
		}
	}
	e := format.External{ID: len(pl.objects.Externals) + 1, Key: f.Path, What: what, Peer: peer, SockType: sockType}
	pl.objects.Externals = append(pl.objects.Externals, e)
	f.External = e.ID
}

// terminals records a terminal at stdin, stdout or stderr as external: the
// restored process gets chpox restore's own, as a shell gives a job its
// terminal, wherever that terminal was (it may not exist any more).
// Terminals at other fds are reopened by path.
func (pl *plan) terminals() error {
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.FD <= 2 && f.IsTerminal() {
				pl.markExternal(f, "terminal", 0, 0)
			}
		}
	}
	return nil
}
