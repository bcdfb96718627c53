package restore

import (
	"os"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/netlink"
)

// createNetlink makes every netlink socket (pkg/objects/netlink) and keeps
// it in o.descs for the fds that name it.
func (o *objects) createNetlink(img *format.Image) error {
	files := map[int]*os.File{}
	for _, rec := range img.Objects.Netlink {
		f, err := netlink.Create(rec)
		if err != nil {
			return err
		}
		files[rec.ID] = f
		o.netlink = append(o.netlink, f)
	}
	for _, p := range img.Processes {
		for _, f := range p.Files {
			if f.Kind == format.FileNetlink {
				o.descs[f.Desc] = files[f.Socket]
			}
		}
	}
	return nil
}
