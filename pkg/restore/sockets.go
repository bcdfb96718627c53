package restore

import (
	"github.com/chpox/chpox/pkg/format"
)

// createSockets makes every socket of the image in chpox (pkg/objects/unixsock,
// pkg/objects/netlink, pkg/objects/inet) and keeps one file per open file description in o.descs,
// from where each process takes it.
func (o *objects) createSockets(img *format.Image) error {
	if err := o.createUnix(img); err != nil {
		return err
	}
	if err := o.createNetlink(img); err != nil {
		return err
	}
	return o.createInet(img)
}

// fillSockets puts the saved queues back, once the data section is read.
func (o *objects) fillSockets() error {
	if err := o.fillUnix(); err != nil {
		return err
	}
	return o.fillInet()
}

// beforeRun is the last step before the processes run: what must wait
// until every process holds its objects. Timerfds are armed last, so the
// time spent before the run does not count.
func (o *objects) beforeRun() error {
	if err := o.finishStandIns(); err != nil {
		return err
	}
	if err := o.finishPairs(); err != nil {
		return err
	}
	if err := o.resumeInet(); err != nil {
		return err
	}
	return o.armTimerfds()
}
