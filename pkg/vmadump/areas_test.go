package vmadump

import (
	"testing"

	"github.com/prometheus/procfs"

	"github.com/chpox/chpox/pkg/format"
)

// The kind of an area comes from its maps line; a System V segment's inode
// is its shmid, and the first segment of a namespace has shmid 0, like an
// anonymous area (a fresh machine's first segment: CI found it).
func TestClassify(t *testing.T) {
	shared := &procfs.ProcMapPermissions{Read: true, Write: true, Shared: true}
	private := &procfs.ProcMapPermissions{Read: true, Write: true, Private: true}
	for _, c := range []struct {
		name  string
		perms *procfs.ProcMapPermissions
		inode uint64
		want  string
	}{
		{"/SYSV5c0577d0 (deleted)", shared, 0, format.VMASysVShm},
		{"/SYSV00000000 (deleted)", shared, 32768, format.VMASysVShm},
		{"", private, 0, format.VMAAnon},
		{"", shared, 0, format.VMASharedAnon},
		{"/dev/zero (deleted)", shared, 6, format.VMASharedAnon},
		{"[vdso]", private, 0, format.VMAVDSO},
	} {
		a, err := classify(&procfs.ProcMap{StartAddr: 0x10000, EndAddr: 0x20000, Perms: c.perms, Inode: c.inode, Pathname: c.name})
		if err != nil {
			t.Errorf("%q inode %d: %v", c.name, c.inode, err)
			continue
		}
		if a.Kind != c.want {
			t.Errorf("%q inode %d: kind %v, want %v", c.name, c.inode, a.Kind, c.want)
		}
	}
}
