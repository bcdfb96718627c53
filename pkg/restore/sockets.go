package restore

import (
	"fmt"

	"github.com/chpox/chpox/pkg/format"
)

// createSockets makes every socket of the image in chpox (pkg/objects/unixsock,
// pkg/objects/inet) and keeps one file per open file description in o.descs,
// from where each process takes it.
func (o *objects) createSockets(img *format.Image) error {
	if err := o.createUnix(img); err != nil {
		return err
	}
	if len(img.Objects.InetSockets) > 0 {
		return fmt.Errorf("the image holds sockets, which this chpox cannot restore yet: %w", ErrIncompatible)
	}
	return nil
}

// fillSockets puts the saved queues back, once the data section is read.
func (o *objects) fillSockets() error {
	return o.fillUnix()
}

// beforeRun is the last step before the processes run: what must wait
// until every process holds its objects.
func (o *objects) beforeRun() error { return nil }
