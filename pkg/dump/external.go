package dump

import (
	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
)

// external records that fd f of p reaches an object that stays outside the
// checkpoint (what says what it is, peer is the outside process holding the
// other end, 0 if unknown). fds of one open file description share one
// External.
func (pl *plan) external(p *proc, f *procinfo.OpenFile, what string, peer int) {
	if pl.externals == nil {
		pl.externals = map[int]int{}
	}
	id, ok := pl.externals[f.Desc]
	if !ok {
		id = len(pl.objects.Externals) + 1
		pl.objects.Externals = append(pl.objects.Externals, format.External{ID: id, Key: f.Path, What: what, Peer: peer})
		pl.externals[f.Desc] = id
	}
	f.Kind, f.External, f.Socket = format.FileExternal, id, 0
}
