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
// Each area then gets its protection at once: the mprotect that splits an
// attachment makes the kernel count the new area as an attach (shm_open,
// which also records the caller as the segment's last user), and that must
// be over before sysvProcesses sets the last user.
func (x *target) shmat(v format.VMA, o *objects) error {
	if v.Offset == 0 {
		kid, ok := o.sysv.ShmKID(v.SysVShm)
		if !ok {
			return fmt.Errorf("System V segment %d is missing from the image", v.SysVShm)
		}
		at, err := x.call("shmat", unix.SYS_SHMAT, uint64(kid), v.Start, uint64(v.SysVFlags))
		if err == nil && at != v.Start {
			err = fmt.Errorf("attached at %#x", at)
		}
		if err != nil {
			return err
		}
	}
	if v.Prot != shmatProt(v.SysVFlags) {
		_, err := x.call("mprotect", unix.SYS_MPROTECT, v.Start, v.End-v.Start, uint64(v.Prot))
		return err
	}
	return nil
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

// sysvAfterData finishes the System V objects once every process is
// mapped (and so attached) and the data section is read: messages, the
// removed segments marked again, then what the processes themselves do.
func (o *objects) sysvAfterData(img *format.Image, live []*node) error {
	if img.Objects.SysV == nil {
		return nil
	}
	byPID := map[int]*target{}
	for _, n := range live {
		byPID[n.p.PID] = n.x
	}
	if err := o.sysvQueues(img, byPID); err != nil {
		return err
	}
	if err := o.sysv.Finish(); err != nil {
		return err
	}
	return o.sysvProcesses(img, live, byPID)
}

// sysvCaller lets pkg/objects/sysv inject calls into the process, with
// the scratch data area for their arguments.
func (x *target) sysvCaller(size int) (sysv.Caller, error) {
	x.resetScratch()
	at, err := x.put(make([]byte, size))
	if err != nil {
		return sysv.Caller{}, err
	}
	return sysv.Caller{
		Call:  func(nr uint64, args ...uint64) (uint64, error) { return x.call("ipc", nr, args...) },
		Write: func(addr uint64, b []byte) error { return ptrace.WriteMem(x.pid(), addr, b) },
		Addr:  at,
	}, nil
}

// maxSentText is the longest message text a process sends itself from
// its scratch area; a longer last message is sent by chpox.
const maxSentText = scratchSize - scratchData - 8 - 64

// sysvQueues fills the message queues. A queue whose last sender or
// receiver is a process of the image first passes an empty message from
// that sender (or chpox) to that receiver (or chpox); then chpox queues
// the messages, the last one sent by the last sender when it is of the
// image: the kernel's lspid and lrpid name them again (sysv.TouchSem).
func (o *objects) sysvQueues(img *format.Image, byPID map[int]*target) error {
	sv := img.Objects.SysV
	if sv == nil {
		return nil
	}
	lastBy := func(q format.SysVMsgQueue) bool {
		return byPID[q.LSPID] != nil && len(q.Messages) > 0 && q.Messages[len(q.Messages)-1].Text.Len <= maxSentText
	}
	for _, q := range sv.Msg {
		snd, rcv := byPID[q.LSPID], byPID[q.LRPID]
		// The dummy is needed for a receiver of the image, or for a
		// sender of the image that does not send the last message.
		if rcv == nil && (snd == nil || lastBy(q)) {
			continue
		}
		var err error
		if snd != nil {
			err = withCaller(snd, 8, func(c sysv.Caller) error { return c.Send(q.KID, sysv.DummyType, nil) })
		} else {
			err = o.sysv.Dummy(q.KID)
		}
		if err == nil && rcv != nil {
			err = withCaller(rcv, 8, func(c sysv.Caller) error { return c.Recv(q.KID) })
		} else if err == nil {
			err = o.sysv.TakeDummy(q.KID)
		}
		if err != nil {
			return fmt.Errorf("System V message queue %d: pass a message from its last sender to its last receiver: %w", q.KID, err)
		}
	}
	if err := o.sysv.Fill(lastBy); err != nil {
		return err
	}
	for qi, q := range sv.Msg {
		if !lastBy(q) {
			continue
		}
		i := len(q.Messages) - 1
		text := o.sysv.Text(qi, i)
		err := withCaller(byPID[q.LSPID], 8+len(text), func(c sysv.Caller) error { return c.Send(q.KID, q.Messages[i].Type, text) })
		if err != nil {
			return fmt.Errorf("System V message queue %d: message %d: %w", q.KID, i, err)
		}
	}
	return nil
}

func withCaller(x *target, size int, f func(sysv.Caller) error) error {
	c, err := x.sysvCaller(size)
	if err != nil {
		return err
	}
	return f(c)
}

// sysvProcesses runs once every process has its attachments and chpox has
// let go of its own (sysv.Set.Finish): each process gets its SEM_UNDO
// adjustments (the undo list is the calling process's; SETALL, before,
// cleared every adjustment), then the last process to change a semaphore,
// and to attach or detach a segment, does so again (Linux lets a removed
// segment be attached by its id).
// All before any process takes its own credentials.
func (o *objects) sysvProcesses(img *format.Image, live []*node, byPID map[int]*target) error {
	sv := img.Objects.SysV
	if sv == nil {
		return nil
	}
	for _, n := range live {
		if len(n.p.SemUndo) == 0 {
			continue
		}
		err := withCaller(n.x, 6*sysv.MaxOps, func(c sysv.Caller) error { return sysv.Restore(c, n.p.SemUndo, o.sysv.Values) })
		if err != nil {
			return fmt.Errorf("pid %d: %w", n.p.PID, err)
		}
	}
	for _, s := range sv.Sem {
		for num, pid := range s.PIDs {
			if x := byPID[pid]; x != nil {
				if err := withCaller(x, 6*sysv.MaxOps, func(c sysv.Caller) error { return c.TouchSem(s.KID, num, s.Values[num]) }); err != nil {
					return fmt.Errorf("pid %d: %w", pid, err)
				}
			}
		}
	}
	for _, m := range sv.Shm {
		x := byPID[m.LPID]
		if x == nil {
			x = byPID[m.CPID]
		}
		if x == nil {
			continue
		}
		if err := withCaller(x, 8, func(c sysv.Caller) error { return c.TouchShm(m.KID) }); err != nil {
			return fmt.Errorf("pid %d: %w", x.pid(), err)
		}
	}
	return nil
}
