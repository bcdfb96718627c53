package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/ptrace"
)

// System V IPC objects (pkg/objects/sysv) are created in chpox's IPC
// namespace before any process exists, with their ids; each process then
// attaches its segments with an injected shmat at the dumped address.

func (o *objects) createSysV(img *format.Image) error {
	var err error
	o.sysv, err = sysv.Create(img.Objects.SysV)
	return err
}

func (o *objects) sysvSinks(img *format.Image) []sink {
	sv := img.Objects.SysV
	if sv == nil {
		return nil
	}
	var out []sink
	for _, m := range sv.Shm {
		for _, r := range m.Pages {
			out = append(out, sink{off: r.Off, len: r.Len, addr: r.Addr, file: o.sysv.ShmAt(m.ID)})
		}
	}
	for qi, q := range sv.Msg {
		for i, m := range q.Messages {
			if m.Text.Len > 0 {
				out = append(out, sink{off: m.Text.Off, len: m.Text.Len, file: o.sysv.TextAt(qi, i)})
			}
		}
	}
	return out
}

// shmat attaches the segment of area v where it was, with its flags. An
// attachment that an mprotect split into several areas is attached once,
// at its first (offset 0); dump made sure each is whole.
func (x *target) shmat(v format.VMA, o *objects) error {
	if v.Offset != 0 {
		return nil
	}
	kid, ok := o.sysv.ShmKID(v.SysVShm)
	if !ok {
		return fmt.Errorf("System V segment %d is missing from the image", v.SysVShm)
	}
	at, err := x.call("shmat", unix.SYS_SHMAT, uint64(kid), v.Start, uint64(v.SysVFlags))
	if err == nil && at != v.Start {
		err = fmt.Errorf("attached at %#x", at)
	}
	return err
}

// shmatProt is the protection shmat gives an attachment made with flags.
func shmatProt(flags int) int {
	prot := format.ProtRead | format.ProtWrite
	if flags&unix.SHM_RDONLY != 0 {
		prot = format.ProtRead
	}
	if flags&0o100000 != 0 { // SHM_EXEC
		prot |= format.ProtExec
	}
	return prot
}

// restoreSemUndo gives the process its SEM_UNDO adjustments, by semops
// injected into it (the undo list is the calling process's): after the
// sets got their values (SETALL clears every adjustment of a set), before
// the process takes its own credentials.
func (x *target) restoreSemUndo(p *format.Process, o *objects) error {
	if len(p.SemUndo) == 0 {
		return nil
	}
	x.resetScratch()
	at, err := x.put(make([]byte, 6*sysv.MaxOps))
	if err != nil {
		return err
	}
	c := sysv.Caller{
		Call:  func(nr uint64, args ...uint64) (uint64, error) { return x.call("semop", nr, args...) },
		Write: func(addr uint64, b []byte) error { return ptrace.WriteMem(x.pid(), addr, b) },
		Addr:  at,
	}
	return sysv.Restore(c, p.SemUndo, o.sysv.Values)
}
