package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chpox/chpox/pkg/format"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show what an image holds, or what changed between two",
		ArgsUsage: "IMAGE [LATER-IMAGE] (IMAGE - reads it from standard input, and checks its data)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
			&cli.BoolFlag{Name: "verify", Usage: "also read and check all page data"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 2 && !c.Bool("json") {
				return inspectTwo(c.Args().Get(0), c.Args().Get(1))
			}
			if c.NArg() != 1 {
				return fmt.Errorf("%w: inspect takes one image file, or two to compare (without --json)", errUsage)
			}
			var img *format.Image
			var err error
			if c.Args().First() == "-" {
				img, err = format.ReadStream(os.Stdin)
			} else {
				img, err = format.Open(c.Args().First())
			}
			if err != nil {
				return fmt.Errorf("inspect %s: %w", c.Args().First(), err)
			}
			defer img.Close()
			// A stream's data size is known once it is read, and a stream
			// must be read to its end to be known complete.
			if c.Bool("verify") || c.Args().First() == "-" {
				if err := img.VerifyData(); err != nil {
					return fmt.Errorf("inspect %s: %w", c.Args().First(), err)
				}
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Header    format.Header     `json:"header"`
					Objects   format.Objects    `json:"objects"`
					Processes []*format.Process `json:"processes"`
				}{img.Header, img.Objects, img.Processes})
			}
			printImage(os.Stdout, img)
			return nil
		},
	}
}

// inspectTwo shows what changed from image a to image b.
func inspectTwo(a, b string) error {
	var imgs []*format.Image
	for _, path := range []string{a, b} {
		img, err := format.Open(path)
		if err != nil {
			return fmt.Errorf("inspect %s: %w", path, err)
		}
		defer img.Close()
		imgs = append(imgs, img)
	}
	return diffImages(os.Stdout, imgs[0], imgs[1])
}

func printImage(out io.Writer, img *format.Image) {
	h := img.Header
	fmt.Fprintf(out, "image: format %d, %s, kernel %s, made %s on %s by %s\n",
		img.Version, h.Arch, h.Kernel, h.Created.Local().Format("2006-01-02 15:04:05"), h.Hostname, h.Tool)
	fmt.Fprintf(out, "processes: %d, data: %s, %d pipes, %d shared memory objects\n",
		h.Processes, bytesString(h.DataBytes), len(img.Objects.Pipes), len(img.Objects.Shm))
	if img.Compressed() && img.StoredBytes() >= 0 {
		ratio := 0.0
		if img.StoredBytes() > 0 {
			ratio = float64(h.DataBytes) / float64(img.StoredBytes())
		}
		fmt.Fprintf(out, "data stored zstd-compressed: %s for %s, ratio %.2f\n", bytesString(img.StoredBytes()), bytesString(h.DataBytes), ratio)
	}
	if img.Streamed() {
		fmt.Fprintln(out, "written as a stream (data CRC in a trailer)")
	}
	for _, m := range img.Objects.Shm {
		switch {
		case m.Memfd:
			fmt.Fprintf(out, "  memfd %d %q: %d bytes, mode %#o, seals %#x\n", m.ID, m.Name, m.Size, m.Mode, m.Seals)
		case m.Deleted != "":
			fmt.Fprintf(out, "  shared memory %d: deleted file %s, %d bytes, mode %#o\n", m.ID, m.Deleted, m.Size, m.Mode)
		}
	}
	for _, s := range img.Objects.InetSockets {
		fmt.Fprintf(out, "  inet socket %d: %s\n", s.ID, inetLine(s))
	}
	printEmbedded(out, img.Objects.Embedded)
	printSysV(out, img.Objects.SysV)
	printTree(out, img.Processes)
	printExternals(out, img)
	printTerminals(out, img)
	printUnix(out, img.Objects.UnixSockets)
	for _, n := range img.Objects.Netlink {
		fmt.Fprintf(out, "netlink socket %d: protocol %d, port id %d, groups %v\n", n.ID, n.Protocol, n.PortID, n.Groups)
	}
	users := descUsers(img.Processes)
	for _, p := range img.Processes {
		printProcess(out, p, users, deletedFIFOs(img.Objects.Pipes))
	}
}

// printTree draws the process tree, children indented under parents.
func printTree(out io.Writer, ps []*format.Process) {
	children := map[int][]*format.Process{}
	inImage := map[int]bool{}
	for _, p := range ps {
		inImage[p.PID] = true
	}
	var roots []*format.Process
	for _, p := range ps {
		if inImage[p.PPID] {
			children[p.PPID] = append(children[p.PPID], p)
		} else {
			roots = append(roots, p)
		}
	}
	fmt.Fprintln(out, "tree:")
	var walk func(p *format.Process, depth int)
	walk = func(p *format.Process, depth int) {
		note := ""
		switch {
		case p.Zombie:
			note = fmt.Sprintf("  (zombie, wait status %#x)", p.WaitStatus)
		case len(p.Threads) > 1:
			note = fmt.Sprintf("  (%d threads)", len(p.Threads))
		}
		if p.Stopped {
			sig := p.StopSignal
			if sig == 0 {
				sig = 19
			}
			waited := ""
			if p.StopWaited {
				waited = ", stop already waited for"
			}
			note += fmt.Sprintf("  (stopped by %s%s)", stopSignalName(sig), waited)
		}
		if p.Attrs != nil && p.Attrs.ChildSubreaper {
			note += "  (child subreaper)"
		}
		fmt.Fprintf(out, "  %s%d %s%s\n", strings.Repeat("  ", depth), p.PID, p.Comm, note)
		for _, c := range children[p.PID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
}

// descUsers maps each open file description to the "pid:fd"s that share it.
func descUsers(ps []*format.Process) map[int][]string {
	out := map[int][]string{}
	for _, p := range ps {
		for _, f := range p.Files {
			out[f.Desc] = append(out[f.Desc], fmt.Sprintf("%d:%d", p.PID, f.FD))
		}
	}
	return out
}

// deletedFIFOs are the pipes that were FIFOs removed while open.
func deletedFIFOs(pipes []format.Pipe) map[int]bool {
	out := map[int]bool{}
	for _, p := range pipes {
		out[p.ID] = p.Deleted
	}
	return out
}

func printProcess(out io.Writer, p *format.Process, users map[int][]string, deletedFIFO map[int]bool) {
	fmt.Fprintf(out, "\nprocess %d (%s) parent %d, group %d, session %d, uid %d\n", p.PID, p.Comm, p.PPID, p.PGID, p.SID, p.Creds.UID[0])
	if p.Zombie {
		fmt.Fprintf(out, "  zombie: wait status %#x\n", p.WaitStatus)
		return
	}
	cwd := p.Cwd
	if p.CwdDeleted {
		cwd += " (deleted)"
	}
	exe := p.Exe
	if p.ExeFile != nil {
		exe += fmt.Sprintf(" (%s saved)", bytesString(p.ExeFile.Size))
	}
	fmt.Fprintf(out, "  exe %s\n  cwd %s\n", exe, cwd)
	if p.Root != "" && p.Root != "/" {
		fmt.Fprintf(out, "  root %s (chroot)\n", p.Root)
	}
	fmt.Fprintf(out, "  cmdline %s\n", strings.Join(p.Cmdline, " "))
	for _, t := range p.Threads {
		fmt.Fprintf(out, "  thread %d (%s): rip %#x rsp %#x, blocked %#x, %d pending, xsave %d bytes\n",
			t.TID, t.Comm, t.Regs.Rip, t.Regs.Rsp, t.SigMask, len(t.Pending), len(t.XSave))
		if line := threadAttrsLine(p, &t); line != "" {
			fmt.Fprintf(out, "    %s\n", line)
		}
	}
	if a := p.Attrs; a != nil {
		line := fmt.Sprintf("  attributes: oom_score_adj %d", a.OOMScoreAdj)
		if b := p.Creds.SecureBits; b != nil && *b != 0 {
			line += fmt.Sprintf(", securebits %#x", *b)
		}
		if a.ChildSubreaper {
			line += ", child subreaper"
		}
		if a.THPDisable != 0 {
			line += fmt.Sprintf(", THP disabled (%#x)", a.THPDisable)
		}
		if a.Membarrier != nil && *a.Membarrier != 0 {
			line += fmt.Sprintf(", membarrier %#x", *a.Membarrier)
		}
		if a.LoginUID != nil && *a.LoginUID != ^uint32(0) {
			line += fmt.Sprintf(", loginuid %d", *a.LoginUID)
		}
		fmt.Fprintln(out, line)
	}
	if len(p.Seccomp) > 0 {
		var fs []string
		for _, f := range p.Seccomp {
			users := 0
			for i := range p.Threads {
				if slices.Contains(p.SeccompChain(&p.Threads[i]), f.ID) {
					users++
				}
			}
			d := fmt.Sprintf("#%d %d insns", f.ID, len(f.Prog)/8)
			if f.Parent != 0 {
				d += fmt.Sprintf(" after #%d", f.Parent)
			}
			if f.Flags&2 != 0 {
				d += " log"
			}
			fs = append(fs, fmt.Sprintf("%s, %d threads", d, users))
		}
		fmt.Fprintf(out, "  seccomp filters: %s\n", strings.Join(fs, "; "))
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  memory\tprot\tkind\tsaved\tname")
	for _, v := range p.VMAs {
		saved := uint64(0)
		for _, r := range v.Pages {
			saved += r.Len
		}
		name := v.Name
		if v.Kind == format.VMASysVShm {
			name = fmt.Sprintf("%s (System V segment %d, offset %#x)", name, v.SysVShm, v.Offset)
		}
		fmt.Fprintf(tw, "  %x-%x\t%s\t%s\t%s\t%s%s\n", v.Start, v.End, protString(v), v.Kind, bytesString(int64(saved)), name, vmaDetails(v))
	}
	fmt.Fprintln(tw, "  fd\tkind\tflags\toffset\tpath\tshared with")
	for _, f := range p.Files {
		var others []string
		for _, u := range users[f.Desc] {
			if u != fmt.Sprintf("%d:%d", p.PID, f.FD) {
				others = append(others, u)
			}
		}
		path := f.Path
		if f.Kind == format.FileSignalfd {
			path = fmt.Sprintf("%s mask %#x", path, f.SigMask)
		}
		note := fileNote(f)
		if f.Kind == format.FilePipe && deletedFIFO[f.Pipe] {
			note = " (deleted FIFO)"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%#o\t%d\t%s%s\t%s\n", f.FD, f.Kind, f.Flags, f.Pos, path, note, strings.Join(others, " "))
		if d := fileDetails(f); d != "" {
			fmt.Fprintf(tw, "  \t\t\t\t%s\t\n", d)
		}
	}
	tw.Flush()
	for _, f := range p.Files {
		for _, l := range f.Locks {
			holder := ""
			if l.PID != 0 {
				holder = fmt.Sprintf(" (holder pid %d)", l.PID)
			}
			fmt.Fprintf(out, "  lock: fd %d: %s%s\n", f.FD, l, holder)
		}
	}
	var sigs []string
	for _, s := range p.Sigactions {
		sigs = append(sigs, fmt.Sprintf("%d:%#x", s.Signal, s.Handler))
	}
	fmt.Fprintf(out, "  signal actions: %s\n", strings.Join(sigs, " "))
	if m := p.Memory; m != nil {
		fmt.Fprintf(out, "  memory: lock future %q, KSM merge all %v, THP disabled %v\n", m.LockFuture, m.MergeAny, m.THPDisable)
	}
	if len(p.SemUndo) > 0 {
		var adj []string
		for _, u := range p.SemUndo {
			adj = append(adj, fmt.Sprintf("semid %d #%d: %+d", u.KID, u.Num, u.Adj))
		}
		fmt.Fprintf(out, "  SEM_UNDO adjustments: %s\n", strings.Join(adj, ", "))
	}
	printTimers(out, p)
}

// vmaDetails is the kernel-held state of an area beyond its pages, as
// " [advice, lock, guards, sealed, read-only]"; empty for a plain area.
func vmaDetails(v format.VMA) string {
	d := append([]string(nil), v.Advice...)
	if v.Lock != "" {
		d = append(d, "mlock:"+v.Lock)
	}
	for _, g := range v.Guards {
		d = append(d, fmt.Sprintf("guard %x-%x", g.Start, g.End))
	}
	if v.Sealed {
		d = append(d, "mseal")
	}
	if v.NoReserve {
		d = append(d, "noreserve")
	}
	if len(v.Inherited) > 0 {
		var n int64
		for _, s := range v.Inherited {
			n += int64(s.End - s.Start)
		}
		d = append(d, "from parent "+bytesString(n))
	}
	if v.MayWrite != nil && !*v.MayWrite {
		d = append(d, "never writable")
	}
	if len(d) == 0 {
		return ""
	}
	return " [" + strings.Join(d, ", ") + "]"
}

// printTimers shows a line per timer: interval timers, POSIX timers and
// the state of timerfds.
func printTimers(out io.Writer, p *format.Process) {
	dur := func(ns int64) string { return time.Duration(ns).String() }
	for _, t := range p.ITimers {
		name := [...]string{"real", "virtual", "prof"}[min(max(t.Which, 0), 2)]
		fmt.Fprintf(out, "  itimer %s: %s left, every %s\n", name, dur(t.ValueNS), dur(t.IntervalNS))
	}
	for _, t := range p.PosixTimers {
		notify := [...]string{"SIGEV_SIGNAL", "SIGEV_NONE", "SIGEV_THREAD", "?"}[min(max(t.Notify&^format.SigevThreadID, 0), 3)]
		if t.Notify&format.SigevThreadID != 0 {
			notify += fmt.Sprintf(" to thread %d", t.TID)
		}
		state := "not armed"
		if t.ValueNS != 0 {
			state = fmt.Sprintf("%s left, every %s", dur(t.ValueNS), dur(t.IntervalNS))
			if t.AbsNS != 0 {
				state += ", absolute " + time.Unix(0, t.AbsNS).UTC().Format(time.RFC3339Nano)
			}
		}
		fmt.Fprintf(out, "  posix timer %d: clock %d, %s, signal %d, value %#x: %s\n", t.ID, t.Clock, notify, t.Signal, t.Sival, state)
	}
	for _, f := range p.Files {
		if t := f.Timerfd; t != nil {
			fmt.Fprintf(out, "  timerfd fd %d: clock %d, flags %#x, %s left, every %s, %d unread\n",
				f.FD, t.Clock, t.Flags, dur(t.ValueNS), dur(t.IntervalNS), t.Ticks)
		}
	}
}

// printSysV lists the System V IPC objects, one line each.
func printSysV(out io.Writer, sv *format.SysVObjects) {
	if sv == nil {
		return
	}
	owner := func(p format.SysVPerm) string {
		return fmt.Sprintf("key %#x, mode %#o, owner %d:%d, creator %d:%d", uint32(p.Key), p.Mode, p.UID, p.GID, p.CUID, p.CGID)
	}
	for _, m := range sv.Shm {
		saved := uint64(0)
		for _, r := range m.Pages {
			saved += r.Len
		}
		removed := ""
		if m.Removed {
			removed = ", removed (goes with its last detach)"
		}
		fmt.Fprintf(out, "System V segment %d: shmid %d, %s, %s (%s saved)%s\n", m.ID, m.KID, owner(m.SysVPerm), bytesString(int64(m.Size)), bytesString(int64(saved)), removed)
	}
	for _, s := range sv.Sem {
		fmt.Fprintf(out, "System V semaphore set %d: semid %d, %s, values %v\n", s.ID, s.KID, owner(s.SysVPerm), s.Values)
	}
	for _, q := range sv.Msg {
		var types []string
		for _, m := range q.Messages {
			types = append(types, fmt.Sprintf("%d:%dB", m.Type, m.Text.Len))
		}
		fmt.Fprintf(out, "System V message queue %d: msqid %d, %s, limit %d bytes, %d messages (type:size) %s\n", q.ID, q.KID, owner(q.SysVPerm), q.QBytes, len(q.Messages), strings.Join(types, " "))
	}
}

// fileNote says what a file record holds beyond its path: a deleted
// file's size and saved data (the rest are holes), a stand-in's owner and
// mode, a device's number.
func fileNote(f format.File) string {
	var b strings.Builder
	if f.Kind == format.FileDeleted || f.Deleted {
		b.WriteString(" (deleted")
		if f.Kind == format.FileDeleted {
			var n uint64
			for _, r := range f.Content {
				n += r.Len
			}
			fmt.Fprintf(&b, ", %s", bytesString(f.Size))
			if f.Size > int64(n) {
				fmt.Fprintf(&b, ", %s saved, the rest holes", bytesString(int64(n)))
			}
		}
		if f.OwnerIDs != nil {
			fmt.Fprintf(&b, ", owner %d:%d", f.OwnerIDs.UID, f.OwnerIDs.GID)
		}
		fmt.Fprintf(&b, ", mode %#o)", f.Mode&0o7777)
	}
	if f.Rdev != 0 {
		fmt.Fprintf(&b, " device %d:%d", f.Rdev>>8&0xfff, f.Rdev&0xff|f.Rdev>>12&0xfff00)
	}
	if f.Kind == format.FilePath && f.Mode&0o170000 == 0o120000 {
		b.WriteString(" (the symlink)")
	}
	return b.String()
}

func protString(v format.VMA) string {
	b := []byte("---p")
	if v.Prot&format.ProtRead != 0 {
		b[0] = 'r'
	}
	if v.Prot&format.ProtWrite != 0 {
		b[1] = 'w'
	}
	if v.Prot&format.ProtExec != 0 {
		b[2] = 'x'
	}
	if v.Shared {
		b[3] = 's'
	}
	return string(b)
}

// printTerminals lists the terminals: pty pairs rebuilt at restore, and
// controlling terminals outside the tree, for which restore uses its own.
func printTerminals(out io.Writer, img *format.Image) {
	for _, t := range img.Objects.TTYs {
		var who []string
		for _, p := range img.Processes {
			if p.CTTY == t.ID && p.SID == p.PID {
				who = append(who, fmt.Sprintf("controlling terminal of session %d", p.PID))
			}
		}
		if t.Foreground != 0 {
			who = append(who, fmt.Sprintf("foreground group %d", t.Foreground))
		}
		mode := "no termios"
		if t.Termios != nil {
			mode = "line mode"
			if t.Termios.Lflag&0o2 == 0 { // ICANON
				mode = "raw mode"
			}
			if t.Termios.Lflag&0o10 == 0 { // ECHO
				mode += ", no echo"
			}
		}
		switch t.Kind {
		case format.TTYPty:
			var flags []string
			for _, f := range []struct {
				on   bool
				name string
			}{{t.Packet, "packet mode"}, {t.Locked, "locked"}, {t.Exclusive, "exclusive"}, {t.HungUp, "slave side hung up"}} {
				if f.on {
					flags = append(flags, f.name)
				}
			}
			if qi, qo := runsLen(t.Input), runsLen(t.Output); qi+qo > 0 {
				flags = append(flags, fmt.Sprintf("queued: %d bytes of input, %d of output", qi, qo))
			}
			fmt.Fprintf(out, "terminal %d: pty pair %s (master in the tree), %dx%d, %s%s; %s\n", t.ID, t.Name, t.Winsize.Col, t.Winsize.Row,
				mode, strings.Join(append([]string{""}, flags...), ", "), strings.Join(who, ", "))
		default:
			fmt.Fprintf(out, "terminal %d: %s outside the tree (restore gives its own terminal, with %s); %s\n", t.ID, t.Name, mode, strings.Join(who, ", "))
		}
	}
}

func runsLen(runs []format.DataRun) uint64 {
	n := uint64(0)
	for _, r := range runs {
		n += r.Len
	}
	return n
}

// printExternals lists the descriptors shared with processes outside the
// checkpoint, with the key `chpox restore --external KEY=...` takes.
func printExternals(out io.Writer, img *format.Image) {
	if len(img.Objects.Externals) == 0 {
		return
	}
	fmt.Fprintln(out, "shared with processes outside the checkpoint (restore --external KEY=FD|closed|null; stdin, stdout and stderr default to chpox restore's own):")
	for _, e := range img.Objects.Externals {
		var fds []string
		for _, p := range img.Processes {
			for _, f := range p.Files {
				if f.Kind == format.FileExternal && f.External == e.ID {
					fds = append(fds, fmt.Sprintf("%d:%d", p.PID, f.FD))
				}
			}
		}
		peer := ""
		if e.Peer > 0 {
			peer = fmt.Sprintf(", other end in pid %d", e.Peer)
		}
		fmt.Fprintf(out, "  %s  %s%s; held as pid:fd %s\n", e.Key, e.What, peer, strings.Join(fds, " "))
	}
}

// printUnix lists the UNIX sockets, one line each.
func printUnix(out io.Writer, socks []format.UnixSocket) {
	if len(socks) > 0 {
		fmt.Fprintln(out, "unix sockets:")
	}
	types := map[int]string{1: "stream", 2: "dgram", 5: "seqpacket"}
	for _, u := range socks {
		var b strings.Builder
		fmt.Fprintf(&b, "  %d %s inode %d", u.ID, types[u.Type], u.Inode)
		switch {
		case u.Abstract:
			fmt.Fprintf(&b, " name @%s", u.Name)
		case u.Name != "":
			fmt.Fprintf(&b, " name %s", u.Name)
		}
		if u.Mode != 0 {
			fmt.Fprintf(&b, " mode %#o", u.Mode)
		}
		if u.Unlinked {
			b.WriteString(" (unlinked)")
		}
		if u.Listening {
			fmt.Fprintf(&b, " listening backlog %d pending %v", u.Backlog, u.Pending)
		}
		if u.Peer != 0 {
			fmt.Fprintf(&b, " peer %d", u.Peer)
		}
		if u.Listener != 0 {
			fmt.Fprintf(&b, " accepted from %d", u.Listener)
		}
		if u.PeerName != "" {
			fmt.Fprintf(&b, " connected to %s", u.PeerName)
		}
		if u.PeerClosed {
			b.WriteString(" peer closed")
		}
		if u.Shutdown != 0 {
			fmt.Fprintf(&b, " shutdown %s", [4]string{"", "rd", "wr", "rdwr"}[u.Shutdown&3])
		}
		var n uint64
		for _, r := range u.Queue {
			n += r.Len
		}
		if n > 0 || len(u.Messages) > 0 {
			fmt.Fprintf(&b, " queue %d bytes", n)
			if len(u.Messages) > 0 {
				fmt.Fprintf(&b, " in %d messages", len(u.Messages))
			}
		}
		fmt.Fprintln(out, b.String())
	}
}

// inetLine describes a TCP or UDP socket in one line.
func inetLine(s format.InetSocket) string {
	proto := "UDP"
	if s.Type == 1 { // SOCK_STREAM
		proto = "TCP"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", proto, s.State)
	if s.Local.IsValid() {
		fmt.Fprintf(&b, " %s", s.Local)
	}
	if s.Peer.IsValid() {
		fmt.Fprintf(&b, " -> %s", s.Peer)
	}
	if s.Outside {
		b.WriteString(" (peer outside the image)")
	}
	if s.State == format.InetListen {
		fmt.Fprintf(&b, " backlog %d", s.Backlog)
	}
	o := s.Options
	for _, f := range []struct {
		on   bool
		name string
	}{{o.ReuseAddr, "reuseaddr"}, {o.ReusePort, "reuseport"}, {o.V6Only, "v6only"}, {o.KeepAlive, "keepalive"}, {o.NoDelay, "nodelay"}} {
		if f.on {
			b.WriteString(" " + f.name)
		}
	}
	if r := s.Repair; r != nil {
		fmt.Fprintf(&b, "; send queue %s (%d unsent), receive queue %s; mss %d", bytesString(int64(format.Len(r.SendQueue))), r.Unsent,
			bytesString(int64(format.Len(r.RecvQueue))), r.MSS)
		if r.Wscale {
			fmt.Fprintf(&b, " wscale %d/%d", r.SndWscale, r.RcvWscale)
		}
		if r.SACK {
			b.WriteString(" sack")
		}
		if r.Timestamps {
			b.WriteString(" timestamps")
		}
	}
	if n := len(s.Datagrams); n > 0 {
		fmt.Fprintf(&b, "; %d datagrams queued", n)
	}
	return b.String()
}

// fileDetails shows the event state of a descriptor in one line: inotify
// watches, the pidfd's process, epoll watches of a file moved since, the
// SIGIO owner.
func fileDetails(f format.File) string {
	var parts []string
	for _, w := range f.Inotify {
		parts = append(parts, fmt.Sprintf("wd %d %s mask %#x", w.WD, w.Path, w.Mask))
	}
	switch {
	case f.PidfdPID == -1:
		parts = append(parts, "pidfd of a reaped process")
	case f.PidfdPID > 0:
		parts = append(parts, fmt.Sprintf("pidfd of process %d", f.PidfdPID))
	}
	for _, w := range f.Watches {
		if w.Desc != 0 {
			parts = append(parts, fmt.Sprintf("watch of fd %d is description %d", w.FD, w.Desc))
		}
	}
	if fa := f.Fanotify; fa != nil {
		parts = append(parts, fmt.Sprintf("fanotify flags %#x", fa.Flags))
		for _, m := range fa.Marks {
			parts = append(parts, fmt.Sprintf("%s mark %s mask %#x ignore %#x", m.Kind, m.Path, m.Mask, m.IgnoredMask))
		}
	}
	if o := f.Owner; o != nil {
		parts = append(parts, fmt.Sprintf("SIGIO owner %s %d signal %d", map[int]string{0: "thread", 1: "process", 2: "group"}[o.Type], o.PID, o.Sig))
	}
	return strings.Join(parts, "; ")
}

// stopSignalName names a job-control stop signal (x86_64 numbers), so
// that inspect needs no syscall package.
func stopSignalName(sig int) string {
	if n, ok := map[int]string{19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU"}[sig]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", sig)
}

var policyNames = map[uint32]string{format.SchedOther: "SCHED_OTHER", format.SchedFIFO: "SCHED_FIFO", format.SchedRR: "SCHED_RR",
	format.SchedBatch: "SCHED_BATCH", format.SchedIdle: "SCHED_IDLE", format.SchedDeadline: "SCHED_DEADLINE", format.SchedExt: "SCHED_EXT"}

// threadAttrsLine is one line of a thread's scheduling, affinity, I/O
// priority, timer slack, parent-death signal and seccomp state.
func threadAttrsLine(p *format.Process, t *format.Thread) string {
	var parts []string
	if a := t.Attrs; a != nil {
		sched := policyNames[a.Policy]
		if a.Priority != 0 {
			sched += fmt.Sprintf(" %d", a.Priority)
		}
		if a.Policy == format.SchedDeadline {
			sched += fmt.Sprintf(" runtime %d deadline %d period %d", a.Runtime, a.Deadline, a.Period)
		}
		if a.Flags&1 != 0 {
			sched += " reset-on-fork"
		}
		var cpus []string
		for i, w := range a.Affinity {
			for b := 0; b < 64; b++ {
				if w&(1<<b) != 0 {
					cpus = append(cpus, fmt.Sprint(64*i+b))
				}
			}
		}
		parts = append(parts, sched, fmt.Sprintf("nice %d", a.Nice), "cpus "+strings.Join(cpus, ","),
			fmt.Sprintf("ioprio %d/%d", a.IOPrio>>13, a.IOPrio&0x1fff), fmt.Sprintf("timer slack %d ns", a.TimerSlack))
		if a.PdeathSig != 0 {
			parts = append(parts, fmt.Sprintf("pdeathsig %d", a.PdeathSig))
		}
		if a.TSC == 2 {
			parts = append(parts, "rdtsc faults")
		}
		if a.MCEKill != "" {
			parts = append(parts, "mce kill "+a.MCEKill)
		}
	}
	switch t.SeccompMode {
	case format.SeccompModeStrict:
		parts = append(parts, "seccomp strict")
	case format.SeccompModeFilter:
		chain := p.SeccompChain(t)
		ids := make([]string, len(chain))
		for i, id := range chain {
			ids[i] = fmt.Sprintf("#%d", id)
		}
		parts = append(parts, fmt.Sprintf("seccomp %d filters (%s)", len(chain), strings.Join(ids, " ")))
	}
	return strings.Join(parts, ", ")
}

// printEmbedded lists the mapped files stored in the image (--embed-files).
func printEmbedded(out io.Writer, files []format.EmbeddedFile) {
	if len(files) == 0 {
		return
	}
	var total int64
	for _, e := range files {
		total += e.Size
	}
	fmt.Fprintf(out, "embedded files: %d, %s\n", len(files), bytesString(total))
	for _, e := range files {
		fmt.Fprintf(out, "  embedded %d: %s, %s (inode %d, mode %#o)\n", e.ID, e.Path, bytesString(e.Size), e.Inode, e.Mode)
	}
}
