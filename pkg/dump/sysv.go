package dump

import (
	"fmt"
	"os"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/vmadump"
)

// sysvObjects saves the System V IPC objects that belong to the tree
// (sysv.Select says which), each once: segments with their content (read
// through an attachment of the tree, or chpox's own for an unattached
// one), semaphore sets, message queues with their messages; the tree's
// attachments name their segment.
func (pl *plan) sysvObjects() error {
	if err := sameIPCNamespace(pl.procs); err != nil {
		return err
	}
	t, err := sysv.ReadTable()
	if err != nil {
		return err
	}
	sizes := map[int]uint64{}
	for _, e := range t.Shm {
		sizes[e.KID] = e.Size
	}
	attached := map[int]int{}
	src := map[int]string{}
	for _, p := range pl.procs {
		if err := wholeAttachments(p, sizes); err != nil {
			return err
		}
		for _, a := range p.areas {
			if a.Kind == format.VMASysVShm {
				kid := int(a.Inode)
				attached[kid]++
				if src[kid] == "" {
					src[kid] = fmt.Sprintf("/proc/%d/map_files/%x-%x", p.Info.PID, a.Start, a.End)
				}
			}
		}
	}
	sel, err := sysv.Select(t, pl.tree(), attached, pl.ipc)
	if err != nil || sel.Empty() {
		return err
	}
	sv := &format.SysVObjects{}
	ids := map[int]int{}
	for _, e := range sel.Shm {
		rec := sysv.ShmRecord(e)
		rec.ID = len(sv.Shm) + 1
		path := src[e.KID]
		if path == "" {
			var detach func()
			if path, detach, err = sysv.Attach(e.KID); err != nil {
				return err
			}
			pl.detach = append(pl.detach, detach)
		}
		s, err := vmadump.OpenShmPath(path, uint64(e.KID))
		if err != nil {
			return fmt.Errorf("System V shared memory segment %d: %w", e.KID, err)
		}
		pl.sysvShm = append(pl.sysvShm, s)
		pl.end = s.Plan(pl.end)
		rec.Pages = s.Pages
		sv.Shm = append(sv.Shm, rec)
		ids[e.KID] = rec.ID
	}
	for _, p := range pl.procs {
		for _, a := range p.areas {
			if a.Kind == format.VMASysVShm {
				a.SysVShm = ids[int(a.Inode)]
			}
		}
	}
	for _, e := range sel.Sem {
		rec, err := sysv.SemRecord(e)
		if err != nil {
			return err
		}
		rec.ID = len(sv.Sem) + 1
		sv.Sem = append(sv.Sem, rec)
	}
	for _, e := range sel.Msg {
		rec, texts, err := sysv.MsgRecord(e)
		if err != nil {
			return err
		}
		rec.ID = len(sv.Msg) + 1
		for i, text := range texts {
			rec.Messages[i].Text = format.DataRun{Off: pl.end}
			if run := pl.blob(text); run != nil {
				rec.Messages[i].Text = run[0]
			}
		}
		sv.Msg = append(sv.Msg, rec)
	}
	pl.objects.SysV = sv
	return nil
}

// sameIPCNamespace refuses a process in another IPC namespace than
// chpox's: chpox sees (in /proc/sysvipc) and restores into its own, so the
// ids the process holds would name other objects after restore.
func sameIPCNamespace(procs []*proc) error {
	self, err := os.Readlink("/proc/self/ns/ipc")
	if err != nil {
		return fmt.Errorf("read IPC namespace: %w", err)
	}
	for _, p := range procs {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/ipc", p.Info.PID))
		if err != nil {
			return fmt.Errorf("pid %d: read IPC namespace: %w", p.Info.PID, err)
		}
		if ns != self {
			return fmt.Errorf("process %d is in another IPC namespace (%s, chpox is in %s): its System V objects cannot be seen or restored from here: %w",
				p.Info.PID, ns, self, procinfo.ErrUnsupported)
		}
	}
	return nil
}

// wholeAttachments refuses an attachment that is no longer whole (part of
// it unmapped, or moved by mremap): restore attaches with shmat, which
// maps a whole segment. Its areas must follow each other from offset 0 to
// the segment's end (an mprotect splits an attachment into several).
func wholeAttachments(p *proc, sizes map[int]uint64) error {
	partial := func(a *vmadump.Area) error {
		return fmt.Errorf("pid %d: System V shared memory segment %d is attached only in part at %#x-%#x (unmapped or moved since shmat), which chpox cannot restore: %w",
			p.Info.PID, int(a.Inode), a.Start, a.End, procinfo.ErrUnsupported)
	}
	var cur *vmadump.Area // the last area of an attachment not yet whole
	var end uint64        // where that attachment ends
	for _, a := range p.areas {
		if cur != nil {
			if a.Kind != format.VMASysVShm || a.Inode != cur.Inode || a.Start != cur.End || a.Offset != cur.Offset+(cur.End-cur.Start) || a.End > end {
				return partial(cur)
			}
		} else {
			if a.Kind != format.VMASysVShm {
				continue
			}
			end = a.Start + (sizes[int(a.Inode)]+4095)&^4095
			if a.Offset != 0 || a.End > end {
				return partial(a)
			}
		}
		cur = a
		if a.End == end {
			cur = nil
		}
	}
	if cur != nil {
		return partial(cur)
	}
	return nil
}
