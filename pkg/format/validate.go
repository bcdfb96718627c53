package format

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
)

const (
	maxXSave    = 64 << 10
	siginfoSize = 128
	maxThreads  = 1 << 16
	pageMask    = 4095
	maxPipeSize = math.MaxInt32 // restore buffers a pipe's bytes in memory

	// Restore buffers a socket's queues in memory and writes them into
	// buffers the kernel bounds far lower (net.core.{r,w}mem_max).
	maxTCPQueue  = 64 << 20
	maxDatagram  = 65535
	maxDatagrams = 1 << 16

	afInet, afInet6        = 2, 10 // AF_INET, AF_INET6
	sockStream, sockDgram  = 1, 2  // SOCK_STREAM, SOCK_DGRAM
	ipprotoTCP, ipprotoUDP = 6, 17 // IPPROTO_TCP, IPPROTO_UDP
	tcpMaxWscale           = 14    // RFC 7323; the kernel refuses more (tcp_repair_options_est)
)

// validate checks what restore relies on, so that a damaged or hostile image
// is refused before anything is created.
func (img *Image) validate() error {
	if img.dataOff < 0 {
		return corrupt("no data section")
	}
	h := &img.Header
	if h.Processes != len(img.Processes) {
		return corrupt("header says %d processes, image holds %d", h.Processes, len(img.Processes))
	}
	if h.DataBytes != img.dataLen {
		return corrupt("header says %d data bytes, data section has %d", h.DataBytes, img.dataLen)
	}
	if len(img.Processes) == 0 {
		return corrupt("no processes")
	}
	ids, err := img.validateObjects()
	if err != nil {
		return err
	}
	pids := make(map[int]bool)
	tids := make(map[int]bool)
	for _, p := range img.Processes {
		if err := img.validateProcess(p, ids); err != nil {
			return fmt.Errorf("process %d: %w", p.PID, err)
		}
		if pids[p.PID] {
			return corrupt("process %d appears twice", p.PID)
		}
		pids[p.PID] = true
		for _, t := range p.Threads {
			if tids[t.TID] {
				return corrupt("process %d: thread %d appears twice", p.PID, t.TID)
			}
			tids[t.TID] = true
		}
	}
	if err := img.validateEvents(pids, tids); err != nil {
		return err
	}
	return img.disjointRuns()
}

// validateEvents checks the records of version 3 that refer across
// processes: a pidfd names a process of the image, an owner a thread,
// process or group of it, an epoll watch a description some fd has;
// inotify watch descriptors are positive and increasing (restore makes them
// in that order) and name absolute paths.
func (img *Image) validateEvents(pids, tids map[int]bool) error {
	descs := map[int]bool{}
	for _, p := range img.Processes {
		for _, f := range p.Files {
			descs[f.Desc] = true
		}
	}
	for _, p := range img.Processes {
		for _, f := range p.Files {
			if (f.Kind == FilePidfd) != (f.PidfdPID != 0) || f.PidfdPID < -1 || f.PidfdPID > 0 && !pids[f.PidfdPID] && !tids[f.PidfdPID] {
				return corrupt("process %d: fd %d (%s): pidfd of process %d, which the image lacks", p.PID, f.FD, f.Kind, f.PidfdPID)
			}
			if len(f.Inotify) > 0 && f.Kind != FileInotify || len(f.Watches) > 0 && f.Kind != FileEpoll {
				return corrupt("process %d: fd %d (%s) has watches", p.PID, f.FD, f.Kind)
			}
			if (f.Kind == FileFanotify) != (f.Fanotify != nil) {
				return corrupt("process %d: fd %d (%s): fanotify record on the wrong kind", p.PID, f.FD, f.Kind)
			}
			if fa := f.Fanotify; fa != nil {
				for _, m := range fa.Marks {
					if m.Kind != FanotifyInode && m.Kind != FanotifyMount && m.Kind != FanotifyFilesystem || len(m.Path) == 0 || m.Path[0] != '/' {
						return corrupt("process %d: fd %d: fanotify mark %q on %q", p.PID, f.FD, m.Kind, m.Path)
					}
				}
			}
			prev := 0
			for _, w := range f.Inotify {
				if w.WD <= prev || len(w.Path) == 0 || w.Path[0] != '/' {
					return corrupt("process %d: fd %d: inotify watch %d (%q) after %d", p.PID, f.FD, w.WD, w.Path, prev)
				}
				prev = w.WD
			}
			for _, w := range f.Watches {
				if w.FD < 0 || w.Desc < 0 || w.Desc > 0 && !descs[w.Desc] {
					return corrupt("process %d: fd %d: epoll watch of fd %d names description %d, which the image lacks", p.PID, f.FD, w.FD, w.Desc)
				}
			}
			if o := f.Owner; o != nil {
				known := map[int]map[int]bool{0: tids, 1: pids, 2: pids}[o.Type]
				if known == nil || o.PID < 0 || o.PID > 0 && !known[o.PID] || o.Sig < 0 || o.Sig > 64 {
					return corrupt("process %d: fd %d: owner %d of type %d (signal %d) is not in the image", p.PID, f.FD, o.PID, o.Type, o.Sig)
				}
			}
		}
	}
	return nil
}

// validateObjects checks the shared objects: IDs are positive and unique,
// shared memory runs lie inside the object, pipe contents fit the pipe (restore
// writes them back into a pipe of that capacity before anyone reads it).
func (img *Image) validateObjects() (objectIDs, error) {
	o := &img.Objects
	ids := objectIDs{shm: make(map[int]bool), memfd: make(map[int]bool), deleted: make(map[int]bool), pipe: make(map[int]bool), unix: make(map[int]bool),
		inet: make(map[int]bool), netlink: make(map[int]bool), external: make(map[int]bool), sysvShm: make(map[int]bool), semSize: make(map[int]int),
		tty: make(map[int]string), embedded: make(map[int]bool)}
	if err := img.validateEmbedded(ids.embedded); err != nil {
		return ids, err
	}
	if err := img.validateTTYs(o.TTYs, ids.tty); err != nil {
		return ids, err
	}
	if err := img.validateSysV(ids.sysvShm, ids.semSize); err != nil {
		return ids, err
	}
	for _, m := range o.Shm {
		if m.ID <= 0 || ids.shm[m.ID] {
			return ids, corrupt("shared memory ID %d is not positive or appears twice", m.ID)
		}
		ids.shm[m.ID] = true
		ids.memfd[m.ID] = m.Memfd
		ids.deleted[m.ID] = m.Deleted != ""
		if m.Size > math.MaxInt64 {
			return ids, corrupt("shared memory %d has size %d", m.ID, m.Size)
		}
		if err := validateMemfd(m); err != nil {
			return ids, err
		}
		for _, r := range m.Pages {
			if r.Addr > m.Size || r.Len > m.Size-r.Addr {
				return ids, corrupt("shared memory %d: run %#x+%#x beyond its %d bytes", m.ID, r.Addr, r.Len, m.Size)
			}
			if err := img.inData(r); err != nil {
				return ids, fmt.Errorf("shared memory %d: %w", m.ID, err)
			}
		}
	}
	var unixIDs, inetIDs, extIDs []int
	for _, u := range o.UnixSockets {
		unixIDs = append(unixIDs, u.ID)
	}
	for _, u := range o.InetSockets {
		inetIDs = append(inetIDs, u.ID)
	}
	for _, e := range o.Externals {
		extIDs = append(extIDs, e.ID)
	}
	if err := validateNetlink(o.Netlink, ids.netlink); err != nil {
		return ids, err
	}
	if err := uniqueIDs("unix socket", ids.unix, unixIDs); err != nil {
		return ids, err
	}
	if err := uniqueIDs("inet socket", ids.inet, inetIDs); err != nil {
		return ids, err
	}
	if err := img.validateUnix(ids.unix); err != nil {
		return ids, err
	}
	if err := uniqueIDs("external", ids.external, extIDs); err != nil {
		return ids, err
	}
	for i := range o.InetSockets {
		if err := img.validateInet(&o.InetSockets[i]); err != nil {
			return ids, fmt.Errorf("inet socket %d: %w", o.InetSockets[i].ID, err)
		}
	}
	for _, p := range o.Pipes {
		if p.ID <= 0 || ids.pipe[p.ID] {
			return ids, corrupt("pipe ID %d is not positive or appears twice", p.ID)
		}
		ids.pipe[p.ID] = true
		if p.Capacity <= 0 || p.Capacity > maxPipeSize {
			return ids, corrupt("pipe %d has capacity %d", p.ID, p.Capacity)
		}
		if p.Deleted && p.FIFO == "" || p.Mode&^0o7777 != 0 {
			return ids, corrupt("pipe %d: deleted %v without a FIFO path, or mode %#o", p.ID, p.Deleted, p.Mode)
		}
		for _, r := range p.Data {
			if r.Addr > uint64(p.Capacity) || r.Len > uint64(p.Capacity)-r.Addr {
				return ids, corrupt("pipe %d: %d bytes at %d exceed its capacity %d", p.ID, r.Len, r.Addr, p.Capacity)
			}
			if err := img.inData(r); err != nil {
				return ids, fmt.Errorf("pipe %d: %w", p.ID, err)
			}
		}
	}
	return ids, nil
}

// Bounds of a UNIX socket record. Restore buffers a queue in memory and
// sends it back, so a queue cannot exceed what a socket buffer can hold
// (sk_rcvbuf is an int); sun_path holds 108 bytes.
const (
	maxUnixName     = 107
	maxUnixQueue    = math.MaxInt32
	maxUnixMessages = 1 << 20
)

// validateUnix checks the UNIX sockets: known types, names that fit
// sun_path, references to sockets the image holds (peers point at each
// other for stream and seqpacket, a listener is listening, a pending
// connection waits in one backlog and has no peer), queues inside the data
// section, messages that add up to the queue.
func (img *Image) validateUnix(ids map[int]bool) error {
	byID := map[int]*UnixSocket{}
	for i := range img.Objects.UnixSockets {
		byID[img.Objects.UnixSockets[i].ID] = &img.Objects.UnixSockets[i]
	}
	pending := map[int]bool{}
	for _, u := range img.Objects.UnixSockets {
		bad := func(format string, args ...any) error {
			return corrupt("unix socket %d: "+format, append([]any{u.ID}, args...)...)
		}
		stream := u.Type == 1 || u.Type == 5
		if u.Type != 1 && u.Type != 2 && u.Type != 5 {
			return bad("type %d", u.Type)
		}
		if len(u.Name) > maxUnixName || len(u.PeerName) > maxUnixName || (u.Abstract && u.Name == "") || (u.PeerAbstract && u.PeerName == "") {
			return bad("bad name or peer name")
		}
		if u.Mode > 0o7777 || u.Shutdown < 0 || u.Shutdown > 3 || u.Backlog < 0 || u.Backlog > math.MaxInt32 {
			return bad("mode %#o, shutdown %d or backlog %d out of range", u.Mode, u.Shutdown, u.Backlog)
		}
		o := u.Options
		if o.SndBuf < 0 || o.RcvBuf < 0 || o.RcvTimeo < 0 || o.SndTimeo < 0 || o.LingerSec < 0 || o.PeekOff < -1 {
			return bad("negative option")
		}
		for _, id := range []int{u.Peer, u.Listener} {
			if id != 0 && (!ids[id] || id == u.ID) {
				return bad("names socket %d, which the image lacks", id)
			}
		}
		if u.Peer != 0 && (u.PeerName != "" || u.PeerClosed) {
			return bad("has a peer in the image and another one")
		}
		if p := byID[u.Peer]; p != nil && (p.Type != u.Type || stream && p.Peer != u.ID) {
			return bad("peer %d does not fit", u.Peer)
		}
		if l := byID[u.Listener]; l != nil && (!l.Listening || l.Type != u.Type || u.Peer == 0) {
			return bad("listener %d does not fit", u.Listener)
		}
		if u.Listening && (!stream || u.Peer != 0 || u.Listener != 0 || u.Queue != nil) {
			return bad("listens and is connected or holds data")
		}
		if !u.Listening && (u.Pending != nil || u.Backlog != 0) {
			return bad("has a backlog but does not listen")
		}
		for _, c := range u.Pending {
			if cs := byID[c]; cs == nil || pending[c] || cs.Type != u.Type || cs.Peer != 0 || cs.Listening {
				return bad("pending connection %d does not fit", c)
			}
			pending[c] = true
		}
		var total uint64
		for _, r := range u.Queue {
			if err := img.inData(r); err != nil {
				return fmt.Errorf("unix socket %d: %w", u.ID, err)
			}
			total += r.Len
		}
		if total > maxUnixQueue {
			return bad("queue of %d bytes", total)
		}
		if u.Type == 1 && u.Messages != nil || len(u.Messages) > maxUnixMessages {
			return bad("%d messages", len(u.Messages))
		}
		var sum uint64
		for _, m := range u.Messages {
			if m.Len < 0 || m.Len > maxUnixQueue || m.Sender != 0 && !ids[m.Sender] {
				return bad("message of %d bytes from socket %d", m.Len, m.Sender)
			}
			sum += uint64(m.Len)
		}
		if u.Type != 1 && sum != total {
			return bad("messages of %d bytes in all, queue of %d", sum, total)
		}
	}
	return nil
}

// refersTo checks that a socket or external fd names an object of its
// family that the image holds, and that other fds name none.
func refersTo(f File, ids objectIDs) error {
	sockets := map[string]map[int]bool{FileUnix: ids.unix, FileInet: ids.inet, FileNetlink: ids.netlink}[f.Kind]
	if (sockets != nil) != (f.Socket != 0) || f.Socket != 0 && !sockets[f.Socket] {
		return corrupt("fd %d (%s) names socket %d, which the image lacks or which does not fit", f.FD, f.Kind, f.Socket)
	}
	if (f.Kind == FileExternal) != (f.External != 0) || f.External != 0 && !ids.external[f.External] {
		return corrupt("fd %d (%s) names external object %d, which the image lacks or which does not fit", f.FD, f.Kind, f.External)
	}
	switch {
	case f.Kind == FileMemfd && !ids.memfd[f.Shm],
		f.Kind == FileDeleted && f.Shm != 0 && !ids.deleted[f.Shm],
		f.Kind != FileMemfd && f.Kind != FileDeleted && f.Shm != 0:
		return corrupt("fd %d (%s) names shared memory %d, which the image lacks or which does not fit", f.FD, f.Kind, f.Shm)
	case f.Shm != 0 && len(f.Content) > 0:
		return corrupt("fd %d (%s) has content of its own and that of shared memory %d", f.FD, f.Kind, f.Shm)
	}
	pty := f.Kind == FilePTYMaster || f.Kind == FilePTYSlave
	if pty != (f.TTY != 0) || f.TTY != 0 && ids.tty[f.TTY] != TTYPty {
		return corrupt("fd %d (%s) names terminal %d, which the image lacks or which is no pty pair", f.FD, f.Kind, f.TTY)
	}
	return nil
}

// validateTTYs checks the terminal records: unique positive IDs, a known
// kind, a pty index the kernel could give.
func (img *Image) validateTTYs(ttys []TTY, seen map[int]string) error {
	for _, t := range ttys {
		for _, runs := range [][]DataRun{t.Input, t.Output} {
			var n uint64
			for _, r := range runs {
				if err := img.inData(r); err != nil {
					return fmt.Errorf("terminal %d: %w", t.ID, err)
				}
				n += r.Len
			}
			if n > MaxTTYQueue || len(runs) > 0 && t.Kind != TTYPty {
				return corrupt("terminal %d (%s): %d queued bytes", t.ID, t.Kind, n)
			}
		}
		if t.ID <= 0 || seen[t.ID] != "" {
			return corrupt("terminal ID %d is not positive or appears twice", t.ID)
		}
		if t.Kind != TTYPty && t.Kind != TTYOutside {
			return corrupt("terminal %d has unknown kind %q", t.ID, t.Kind)
		}
		if t.Index < 0 || t.Session < 0 || t.Foreground < 0 {
			return corrupt("terminal %d: index %d, session %d, foreground group %d", t.ID, t.Index, t.Session, t.Foreground)
		}
		seen[t.ID] = t.Kind
	}
	return nil
}

// uniqueIDs records the IDs of one object family; they must be positive
// and unique.
func uniqueIDs(family string, seen map[int]bool, ids []int) error {
	for _, id := range ids {
		if id <= 0 || seen[id] {
			return corrupt("%s ID %d is not positive or appears twice", family, id)
		}
		seen[id] = true
	}
	return nil
}

// maxNetlinkGroups bounds the groups one netlink socket may join (the
// kernel's largest family, generic netlink, allocates group numbers
// dynamically; 2^16 is far beyond any real one).
const maxNetlinkGroups = 1 << 16

// validateNetlink checks the netlink sockets: unique IDs, a protocol and
// type the kernel knows, bounded groups.
func validateNetlink(socks []NetlinkSocket, seen map[int]bool) error {
	for _, n := range socks {
		if err := uniqueIDs("netlink socket", seen, []int{n.ID}); err != nil {
			return err
		}
		if n.Protocol < 0 || n.Protocol >= 32 || (n.Type != 2 && n.Type != 3) { // MAX_LINKS; SOCK_DGRAM, SOCK_RAW
			return corrupt("netlink socket %d: protocol %d, type %d", n.ID, n.Protocol, n.Type)
		}
		if len(n.Groups) > maxNetlinkGroups {
			return corrupt("netlink socket %d joins %d groups", n.ID, len(n.Groups))
		}
		for _, g := range n.Groups {
			if g == 0 || g > maxNetlinkGroups {
				return corrupt("netlink socket %d: group %d", n.ID, g)
			}
		}
		if n.Options.SndBuf < 0 || n.Options.RcvBuf < 0 {
			return corrupt("netlink socket %d: buffer sizes %d/%d", n.ID, n.Options.SndBuf, n.Options.RcvBuf)
		}
	}
	return nil
}

// objectIDs are the IDs of the image's shared objects, for the references
// from process records.
type objectIDs struct {
	shm, memfd, deleted, pipe, unix, inet, netlink, external, sysvShm map[int]bool
	semSize                                                           map[int]int    // by kernel id: semaphores in the set
	tty                                                               map[int]string // by ID: its kind
	embedded                                                          map[int]bool   // EmbeddedFile IDs
}

func (img *Image) validateProcess(p *Process, ids objectIDs) error {
	if p.PID <= 0 {
		return corrupt("bad pid %d", p.PID)
	}
	if p.Zombie && !fatalStatus(p.WaitStatus) {
		return corrupt("zombie wait status %#x is neither an exit code nor a fatal signal", p.WaitStatus)
	}
	switch p.StopSignal {
	case 0, 19, 20, 21, 22: // SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU
	default:
		return corrupt("stop signal %d is not a job-control stop signal", p.StopSignal)
	}
	if (p.StopSignal != 0 || p.StopWaited) && (!p.Stopped || p.Zombie) {
		return corrupt("stop signal %d or stop_waited on a process that is not stopped", p.StopSignal)
	}
	if (len(p.Threads) == 0 && !p.Zombie) || len(p.Threads) > maxThreads {
		return corrupt("%d threads", len(p.Threads))
	}
	for _, t := range p.Threads {
		if t.TID <= 0 || len(t.XSave) > maxXSave {
			return corrupt("thread %d: bad tid or %d-byte xsave area", t.TID, len(t.XSave))
		}
		if err := siginfos(t.Pending); err != nil {
			return err
		}
	}
	if err := siginfos(p.SharedPending); err != nil {
		return err
	}
	if m := p.Memory; m != nil && m.LockFuture != "" && m.LockFuture != LockLocked && m.LockFuture != LockOnFault {
		return corrupt("pid %d: lock_future %q", p.PID, m.LockFuture)
	}
	if d := p.Creds.Dumpable; d != nil && *d > 2 {
		return corrupt("pid %d: dumpable %d", p.PID, *d)
	}
	if err := img.validateTimers(p); err != nil {
		return err
	}
	if b := p.Creds.SecureBits; b != nil && *b > 0xff {
		return corrupt("pid %d: securebits %#x", p.PID, *b)
	}
	if err := validateAttrs(p); err != nil {
		return err
	}
	for _, u := range p.SemUndo {
		if n, ok := ids.semSize[u.KID]; !ok || u.Num < 0 || u.Num >= n || u.Adj < -maxSemValue-1 || u.Adj > maxSemValue || u.Adj == 0 {
			return corrupt("SEM_UNDO adjustment %d of semaphore %d of set %d, which the image lacks or which does not fit", u.Adj, u.Num, u.KID)
		}
	}
	var prevEnd uint64
	for i := range p.VMAs {
		if err := img.validateVMA(&p.VMAs[i], prevEnd, ids); err != nil {
			return err
		}
		prevEnd = p.VMAs[i].End
	}
	if p.CwdMode&^0o7777 != 0 || (p.CwdMode != 0 || p.CwdOwner != nil) && !p.CwdDeleted {
		return corrupt("pid %d: working directory mode %#o or owner without a removed working directory", p.PID, p.CwdMode)
	}
	if f := p.ExeFile; f != nil {
		if f.Kind != FileDeleted || f.Size < 0 {
			return corrupt("pid %d: the executable's record is of kind %q, size %d", p.PID, f.Kind, f.Size)
		}
		for _, r := range f.Content {
			if r.Addr > math.MaxInt64 || r.Len > math.MaxInt64-r.Addr || f.Size > 0 && r.Addr+r.Len > uint64(f.Size) {
				return corrupt("pid %d: executable content run %d+%d beyond its size %d", p.PID, r.Addr, r.Len, f.Size)
			}
			if err := img.inData(r); err != nil {
				return fmt.Errorf("pid %d: executable: %w", p.PID, err)
			}
		}
	}
	if p.CTTY != 0 && ids.tty[p.CTTY] == "" {
		return corrupt("controlling terminal %d is not in the image", p.CTTY)
	}
	fds := make(map[int]bool)
	for _, f := range p.Files {
		if f.FD < 0 || fds[f.FD] {
			return corrupt("fd %d is negative or appears twice", f.FD)
		}
		fds[f.FD] = true
		switch f.Kind {
		case FileRegular, FileDir, FileChar, FileDeleted, FilePipe, FileEventfd, FileEpoll, FileUnix, FileInet, FileNetlink, FileExternal, FileInotify, FilePidfd, FileFanotify, FileMemfd, FileTimerfd, FileSignalfd,
			FileBlock, FilePath, FilePTYMaster, FilePTYSlave:
		default:
			return corrupt("fd %d has unknown kind %q", f.FD, f.Kind)
		}
		if f.Desc <= 0 {
			return corrupt("fd %d has file description %d", f.FD, f.Desc)
		}
		if (f.Kind == FilePipe) != (f.Pipe != 0) || f.Pipe != 0 && !ids.pipe[f.Pipe] {
			return corrupt("fd %d (%s) names pipe %d, which the image lacks or which does not fit", f.FD, f.Kind, f.Pipe)
		}
		if err := refersTo(f, ids); err != nil {
			return err
		}
		if err := validateTimerfd(f); err != nil {
			return err
		}
		if len(f.Locks) > 0 && f.Kind != FileRegular && f.Kind != FileDeleted && f.Kind != FileDir {
			return corrupt("fd %d (%s) holds locks, which only files and directories can", f.FD, f.Kind)
		}
		for _, l := range f.Locks {
			if !validLock(l) {
				return corrupt("fd %d: lock %+v is not one restore can take", f.FD, l)
			}
		}
		if err := specialFile(f); err != nil {
			return err
		}
		for _, r := range f.Content {
			// Addr is a file offset: it and the end of the run must fit off_t.
			if r.Addr > math.MaxInt64 || r.Len > math.MaxInt64-r.Addr {
				return corrupt("fd %d: content run %d+%d beyond the largest file offset", f.FD, r.Addr, r.Len)
			}
			if f.Size > 0 && r.Addr+r.Len > uint64(f.Size) {
				return corrupt("fd %d: content run %d+%d beyond the file's size %d", f.FD, r.Addr, r.Len, f.Size)
			}
			if err := img.inData(r); err != nil {
				return fmt.Errorf("fd %d: %w", f.FD, err)
			}
		}
	}
	return nil
}

// disjointRuns checks that no two runs of the image share bytes of the data
// section: restore streams the section once, in order, and hands every byte
// to at most one destination.
func (img *Image) disjointRuns() error {
	var runs []DataRun
	add := func(rs []DataRun) {
		for _, r := range rs {
			if r.Len > 0 {
				runs = append(runs, r)
			}
		}
	}
	for _, p := range img.Processes {
		for _, v := range p.VMAs {
			add(v.Pages)
		}
		for _, f := range p.Files {
			add(f.Content)
		}
		if p.ExeFile != nil {
			add(p.ExeFile.Content)
		}
	}
	for _, m := range img.Objects.Shm {
		add(m.Pages)
	}
	add(img.embeddedRuns())
	if sv := img.Objects.SysV; sv != nil {
		for _, m := range sv.Shm {
			add(m.Pages)
		}
		for _, q := range sv.Msg {
			for _, m := range q.Messages {
				add([]DataRun{m.Text})
			}
		}
	}
	for _, p := range img.Objects.Pipes {
		add(p.Data)
	}
	for _, t := range img.Objects.TTYs {
		add(t.Input)
		add(t.Output)
	}
	for _, u := range img.Objects.UnixSockets {
		add(u.Queue)
	}
	for _, s := range img.Objects.InetSockets {
		if s.Repair != nil {
			add(s.Repair.SendQueue)
			add(s.Repair.RecvQueue)
		}
		for _, d := range s.Datagrams {
			add(d.Data)
		}
	}
	slices.SortFunc(runs, func(a, b DataRun) int {
		switch {
		case a.Off < b.Off:
			return -1
		case a.Off > b.Off:
			return 1
		}
		return 0
	})
	for i := 1; i < len(runs); i++ {
		if prev := runs[i-1]; runs[i].Off < prev.Off+prev.Len { // in bounds: no overflow
			return corrupt("data runs %d+%d and %d+%d overlap", prev.Off, prev.Len, runs[i].Off, runs[i].Len)
		}
	}
	return nil
}

func siginfos(s [][]byte) error {
	for _, si := range s {
		if len(si) != siginfoSize {
			return corrupt("siginfo of %d bytes", len(si))
		}
	}
	return nil
}

func (img *Image) validateVMA(v *VMA, prevEnd uint64, ids objectIDs) error {
	if v.Start >= v.End || v.Start&pageMask != 0 || v.End&pageMask != 0 || v.Start < prevEnd {
		return corrupt("memory area %#x-%#x is empty, unaligned or out of order", v.Start, v.End)
	}
	switch v.Kind {
	case VMAAnon, VMASharedAnon, VMAVDSO:
	case VMASysVShm:
		if !ids.sysvShm[v.SysVShm] || v.SysVFlags&^(sysvShmRdonly|sysvShmExec) != 0 {
			return corrupt("memory area %#x-%#x names System V segment %d (flags %#o), which the image lacks", v.Start, v.End, v.SysVShm, v.SysVFlags)
		}
	case VMAFile:
		if v.File == nil {
			return corrupt("file mapping %#x-%#x names no file", v.Start, v.End)
		}
		if v.File.Embedded != 0 && !ids.embedded[v.File.Embedded] {
			return corrupt("file mapping %#x-%#x names embedded file %d, which the image lacks", v.Start, v.End, v.File.Embedded)
		}
	default:
		return corrupt("memory area %#x-%#x has unknown kind %q", v.Start, v.End, v.Kind)
	}
	if v.Shm != 0 && (v.Kind != VMASharedAnon || !ids.shm[v.Shm]) {
		return corrupt("memory area %#x-%#x (%s) names shared memory %d, which the image lacks or which does not fit", v.Start, v.End, v.Kind, v.Shm)
	}
	prev := v.Start
	for _, r := range v.Pages {
		if r.Addr < prev || r.Addr >= v.End || r.Len == 0 || r.Addr&pageMask != 0 || r.Len&pageMask != 0 || r.Len > v.End-r.Addr {
			return corrupt("page run %#x+%#x outside memory area %#x-%#x", r.Addr, r.Len, v.Start, v.End)
		}
		if err := img.inData(r); err != nil {
			return err
		}
		prev = r.Addr + r.Len
	}
	return validateDetails(v)
}

// validateDetails checks the memory details of an area (memory.go):
// known advice and lock names, guard regions inside the area, in order.
func validateDetails(v *VMA) error {
	for _, a := range v.Advice {
		if !slices.Contains(Advices, a) {
			return corrupt("memory area %#x-%#x: unknown advice %q", v.Start, v.End, a)
		}
	}
	if v.Lock != "" && v.Lock != LockLocked && v.Lock != LockOnFault {
		return corrupt("memory area %#x-%#x: lock %q", v.Start, v.End, v.Lock)
	}
	if err := spansIn(v, "inherited pages", v.Inherited); err != nil {
		return err
	}
	// Inherited pages are not also in the data section.
	for _, s := range v.Inherited {
		for _, r := range v.Pages {
			if r.Addr < s.End && s.Start < r.Addr+r.Len {
				return corrupt("memory area %#x-%#x: inherited pages %#x-%#x are also saved", v.Start, v.End, s.Start, s.End)
			}
		}
	}
	return spansIn(v, "guard region", v.Guards)
}

// spansIn checks that spans lie inside the area, page-aligned, in order.
func spansIn(v *VMA, what string, spans []Span) error {
	prev := v.Start
	for _, g := range spans {
		if g.Start < prev || g.Start >= g.End || g.End > v.End || g.Start&pageMask != 0 || g.End&pageMask != 0 {
			return corrupt("%s %#x-%#x outside memory area %#x-%#x or out of order", what, g.Start, g.End, v.Start, v.End)
		}
		prev = g.End
	}
	return nil
}

// validateMemfd checks what restore gives memfd_create and F_ADD_SEALS.
func validateMemfd(m SharedMem) error {
	if m.Deleted != "" && (m.Memfd || strings.ContainsRune(m.Deleted, 0) || !strings.HasPrefix(m.Deleted, "/")) {
		return corrupt("shared memory %d: deleted file %q", m.ID, m.Deleted)
	}
	if m.Mode&^0o7777 != 0 || !m.Memfd && m.Deleted == "" && m.Mode != 0 {
		return corrupt("shared memory %d: mode %#o", m.ID, m.Mode)
	}
	if !m.Memfd {
		if m.Name != "" || m.Seals != 0 {
			return corrupt("shared memory %d is no memfd but has a name or seals", m.ID)
		}
		return nil
	}
	// memfd_create takes at most 249 bytes of name (MFD_NAME_MAX_LEN).
	if len(m.Name) > 249 || strings.ContainsRune(m.Name, 0) {
		return corrupt("memfd %d: bad name %q", m.ID, m.Name)
	}
	if m.Seals&^sealAll != 0 || m.Mode&^0o7777 != 0 {
		return corrupt("memfd %d: seals %#x, mode %#o", m.ID, m.Seals, m.Mode)
	}
	return nil
}

// Bounds of System V objects, as the kernel has them (include/uapi/linux/
// sem.h SEMVMX, SEMMSL; ipc/util.h IPCMNI_EXTEND).
const (
	sysvShmRdonly = 0o10000  // SHM_RDONLY
	sysvShmExec   = 0o100000 // SHM_EXEC
	maxSemValue   = 32767
	maxSemsPerSet = 32000
	maxSysVID     = 1<<31 - 1
	maxSysVShm    = 1 << 46 // far above any segment a machine can hold; restore fills it in memory
)

// validateSysV checks System V objects: image IDs unique, kernel ids
// unique per kind and valid, non-private keys unique per kind, contents
// inside the object and the data section.
func (img *Image) validateSysV(shmIDs map[int]bool, semSize map[int]int) error {
	sv := img.Objects.SysV
	if sv == nil {
		return nil
	}
	perm := func(what string, id int, p SysVPerm, kids, keys map[int]bool) error {
		if id <= 0 || p.KID < 0 || p.KID > maxSysVID || p.Mode&^0o777 != 0 {
			return corrupt("System V %s %d: kernel id %d, mode %#o", what, id, p.KID, p.Mode)
		}
		if kids[p.KID] || (p.Key != 0 && keys[int(p.Key)]) {
			return corrupt("System V %s %d: kernel id %d or key %#x appears twice", what, id, p.KID, p.Key)
		}
		kids[p.KID] = true
		if p.Key != 0 {
			keys[int(p.Key)] = true
		}
		return nil
	}
	kids, keys := map[int]bool{}, map[int]bool{}
	for _, m := range sv.Shm {
		if shmIDs[m.ID] {
			return corrupt("System V segment ID %d appears twice", m.ID)
		}
		if err := perm("segment", m.ID, m.SysVPerm, kids, keys); err != nil {
			return err
		}
		shmIDs[m.ID] = true
		if m.Size == 0 || m.Size > maxSysVShm || (m.Removed && m.Key != 0) || m.CPID < 0 || m.LPID < 0 {
			return corrupt("System V segment %d: size %d, removed %v with key %#x", m.ID, m.Size, m.Removed, m.Key)
		}
		for _, r := range m.Pages {
			if r.Addr > m.Size || r.Len > m.Size-r.Addr {
				return corrupt("System V segment %d: run %#x+%#x beyond its %d bytes", m.ID, r.Addr, r.Len, m.Size)
			}
			if err := img.inData(r); err != nil {
				return fmt.Errorf("System V segment %d: %w", m.ID, err)
			}
		}
	}
	ids, kids, keys := map[int]bool{}, map[int]bool{}, map[int]bool{}
	for _, s := range sv.Sem {
		if ids[s.ID] {
			return corrupt("System V semaphore set ID %d appears twice", s.ID)
		}
		ids[s.ID] = true
		if err := perm("semaphore set", s.ID, s.SysVPerm, kids, keys); err != nil {
			return err
		}
		if len(s.Values) == 0 || len(s.Values) > maxSemsPerSet || (s.PIDs != nil && len(s.PIDs) != len(s.Values)) {
			return corrupt("System V semaphore set %d has %d semaphores and %d last pids", s.ID, len(s.Values), len(s.PIDs))
		}
		for _, pid := range s.PIDs {
			if pid < 0 {
				return corrupt("System V semaphore set %d: last pid %d", s.ID, pid)
			}
		}
		semSize[s.KID] = len(s.Values)
		for i, v := range s.Values {
			if v > maxSemValue {
				return corrupt("System V semaphore set %d: semaphore %d has value %d", s.ID, i, v)
			}
		}
	}
	ids, kids, keys = map[int]bool{}, map[int]bool{}, map[int]bool{}
	for _, q := range sv.Msg {
		if ids[q.ID] {
			return corrupt("System V message queue ID %d appears twice", q.ID)
		}
		ids[q.ID] = true
		if err := perm("message queue", q.ID, q.SysVPerm, kids, keys); err != nil {
			return err
		}
		total := uint64(0)
		for i, m := range q.Messages {
			if m.Type <= 0 || m.Text.Addr != 0 {
				return corrupt("System V message queue %d: message %d has type %d", q.ID, i, m.Type)
			}
			if err := img.inData(m.Text); err != nil {
				return fmt.Errorf("System V message queue %d: %w", q.ID, err)
			}
			total += m.Text.Len
		}
		if q.QBytes > math.MaxInt32 || total > q.QBytes || q.LSPID < 0 || q.LRPID < 0 {
			return corrupt("System V message queue %d holds %d bytes, more than its limit %d", q.ID, total, q.QBytes)
		}
	}
	return nil
}

func (img *Image) inData(r DataRun) error {
	if r.Off > uint64(img.dataLen) || r.Len > uint64(img.dataLen)-r.Off {
		return corrupt("data run %d+%d beyond the %d-byte data section", r.Off, r.Len, img.dataLen)
	}
	return nil
}

// fatalStatus accepts a wait status a zombie can have: an exit code (0-255
// in bits 8-15), or death by a signal whose default action ends the
// process (with or without the core flag, 0x80).
func fatalStatus(ws int) bool {
	sig := ws & 0x7f
	if sig == 0 {
		return ws&^0xff00 == 0
	}
	if ws&^0xff != 0 {
		return false
	}
	switch sig {
	case 17, 18, 19, 20, 21, 22, 23, 28: // CHLD CONT STOP TSTP TTIN TTOU URG WINCH
		return false
	}
	return sig <= 64
}

// validateInet checks a TCP or UDP socket: a family, type and protocol chpox
// creates, a state that fits them, addresses of the family, queues inside
// the data section and within bounds restore can buffer.
func (img *Image) validateInet(s *InetSocket) error {
	if s.Family != afInet && s.Family != afInet6 {
		return corrupt("family %d", s.Family)
	}
	tcp := s.Type == sockStream && s.Protocol == ipprotoTCP
	udp := s.Type == sockDgram && s.Protocol == ipprotoUDP
	if !tcp && !udp {
		return corrupt("type %d protocol %d", s.Type, s.Protocol)
	}
	for _, a := range []netip.AddrPort{s.Local, s.Peer} {
		if a.IsValid() && (a.Addr().Zone() != "" && s.Family == afInet || a.Addr().Is6() != (s.Family == afInet6)) {
			return corrupt("address %s does not fit family %d", a, s.Family)
		}
	}
	bound, connected := s.Local.IsValid() && s.Local.Port() != 0, s.Peer.IsValid() && s.Peer.Port() != 0
	ok := false
	switch s.State {
	case InetUnbound:
		ok = !bound && !connected
	case InetBound:
		ok = bound && !connected
	case InetListen:
		ok = tcp && bound && !connected && s.Backlog >= 0
	case InetEstablished:
		ok = tcp && bound && connected && s.Repair != nil
	case InetConnected:
		ok = udp && connected
	}
	if !ok {
		return corrupt("state %q does not fit a %s socket bound to %v, connected to %v", s.State, map[bool]string{true: "TCP", false: "UDP"}[tcp], s.Local, s.Peer)
	}
	if (s.Repair != nil) != (s.State == InetEstablished) || len(s.Datagrams) > 0 && !udp {
		return corrupt("repair data or datagrams where they do not belong")
	}
	if r := s.Repair; r != nil {
		for _, q := range [][]DataRun{r.SendQueue, r.RecvQueue} {
			if len(q) > 1 {
				return corrupt("a queue in %d runs", len(q))
			}
			for _, d := range q {
				if err := img.inData(d); err != nil {
					return err
				}
				if d.Len > maxTCPQueue || d.Addr != 0 {
					return corrupt("queue of %d bytes at %d", d.Len, d.Addr)
				}
			}
		}
		if uint64(r.Unsent) > Len(r.SendQueue) {
			return corrupt("%d unsent bytes in a send queue of %d", r.Unsent, Len(r.SendQueue))
		}
		if r.SndWscale > tcpMaxWscale || r.RcvWscale > tcpMaxWscale || r.MSS == 0 || r.MSS > 65535 {
			return corrupt("window scale %d/%d or MSS %d out of range", r.SndWscale, r.RcvWscale, r.MSS)
		}
	}
	if len(s.Datagrams) > maxDatagrams {
		return corrupt("%d queued datagrams", len(s.Datagrams))
	}
	for _, d := range s.Datagrams {
		if !d.From.IsValid() || d.From.Addr().Is6() != (s.Family == afInet6) || len(d.Data) > 1 {
			return corrupt("datagram from %v in %d runs", d.From, len(d.Data))
		}
		for _, r := range d.Data {
			if err := img.inData(r); err != nil {
				return err
			}
			if r.Len > maxDatagram || r.Addr != 0 {
				return corrupt("datagram of %d bytes at %d", r.Len, r.Addr)
			}
		}
	}
	return nil
}

const (
	maxCPUWords  = 128  // 8192 CPUs
	maxBPFInsns  = 4096 // BPF_MAXINSNS
	maxFilters   = 1 << 12
	sockFilterSz = 8
)

// validateAttrs checks the attributes and seccomp filters of p: every
// filter's parent comes before it, so chains end; every thread names an
// existing filter.
func validateAttrs(p *Process) error {
	if a := p.Attrs; a != nil {
		if a.OOMScoreAdj < -1000 || a.OOMScoreAdj > 1000 || a.THPDisable > 3 {
			return corrupt("pid %d: oom_score_adj %d or thp_disable %d", p.PID, a.OOMScoreAdj, a.THPDisable)
		}
	}
	if len(p.Seccomp) > maxFilters {
		return corrupt("pid %d: %d seccomp filters", p.PID, len(p.Seccomp))
	}
	for i, f := range p.Seccomp {
		if f.ID != i+1 || f.Parent < 0 || f.Parent >= f.ID {
			return corrupt("pid %d: seccomp filter %d (parent %d) out of order", p.PID, f.ID, f.Parent)
		}
		if n := len(f.Prog); n == 0 || n%sockFilterSz != 0 || n/sockFilterSz > maxBPFInsns {
			return corrupt("pid %d: seccomp filter %d is %d bytes", p.PID, f.ID, n)
		}
	}
	for _, t := range p.Threads {
		switch t.SeccompMode {
		case SeccompModeNone, SeccompModeStrict:
			if t.SeccompFilter != 0 {
				return corrupt("thread %d: seccomp filter %d without filter mode", t.TID, t.SeccompFilter)
			}
		case SeccompModeFilter:
			if t.SeccompFilter <= 0 || t.SeccompFilter > len(p.Seccomp) {
				return corrupt("thread %d: seccomp filter %d of %d", t.TID, t.SeccompFilter, len(p.Seccomp))
			}
		default:
			return corrupt("thread %d: seccomp mode %d", t.TID, t.SeccompMode)
		}
		a := t.Attrs
		if a == nil {
			continue
		}
		switch a.Policy {
		case SchedOther, SchedFIFO, SchedRR, SchedBatch, SchedIdle, SchedDeadline, SchedExt:
		default:
			return corrupt("thread %d: scheduling policy %d", t.TID, a.Policy)
		}
		if a.TSC < 0 || a.TSC > 2 || (a.MCEKill != "" && a.MCEKill != "early" && a.MCEKill != "late") {
			return corrupt("thread %d: tsc %d or mce_kill %q", t.TID, a.TSC, a.MCEKill)
		}
		if a.Nice < -20 || a.Nice > 19 || a.Priority > 99 || len(a.Affinity) > maxCPUWords || a.PdeathSig < 0 || a.PdeathSig > 64 {
			return corrupt("thread %d: nice %d, priority %d, %d affinity words or pdeathsig %d", t.TID, a.Nice, a.Priority, len(a.Affinity), a.PdeathSig)
		}
	}
	return nil
}

// specialFile checks the version 3 members of a file record (files.go).
func specialFile(f File) error {
	if f.Deleted && f.Kind != FileDir && f.Kind != FileChar && f.Kind != FileBlock {
		return corrupt("fd %d (%s) is marked deleted, which only a directory or device can be", f.FD, f.Kind)
	}
	if f.Size < 0 || f.Size > 0 && f.Kind != FileDeleted {
		return corrupt("fd %d (%s) has size %d", f.FD, f.Kind, f.Size)
	}
	if len(f.Content) > 0 && f.Kind != FileDeleted {
		return corrupt("fd %d (%s) has content, which only a deleted file has", f.FD, f.Kind)
	}
	if f.Kind == FilePath && f.Flags&oPath == 0 {
		return corrupt("fd %d (%s) lacks O_PATH in its flags %#o", f.FD, f.Kind, f.Flags)
	}
	return nil
}

const oPath = 0o10000000 // O_PATH, include/uapi/asm-generic/fcntl.h
