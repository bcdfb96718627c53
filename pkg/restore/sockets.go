package restore

import (
	"fmt"

	"github.com/chpox/chpox/pkg/format"
)

// createSockets makes every socket of the image in chpox (pkg/objects/unixsock,
// pkg/objects/inet) and keeps one file per open file description in o.descs,
// from where each process takes it.
func (o *objects) createSockets(img *format.Image) error {
	if len(img.Objects.UnixSockets) > 0 {
		return fmt.Errorf("the image holds UNIX sockets, which this chpox cannot restore yet: %w", ErrIncompatible)
	}
	return o.createInet(img)
}

// fillSockets puts the saved queues back, once the data section is read.
func (o *objects) fillSockets() error { return o.fillInet() }

// beforeRun is the last step before the processes run: what must wait
// until every process holds its objects.
func (o *objects) beforeRun() error { return o.resumeInet() }
