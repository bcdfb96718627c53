package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/chpox/chpox/pkg/format"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show what an image holds",
		ArgsUsage: "IMAGE (- reads it from standard input, and checks its data)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
			&cli.BoolFlag{Name: "verify", Usage: "also read and check all page data"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%w: inspect takes one image file", errUsage)
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
	printTree(out, img.Processes)
	printExternals(out, img)
	printUnix(out, img.Objects.UnixSockets)
	for _, n := range img.Objects.Netlink {
		fmt.Fprintf(out, "netlink socket %d: protocol %d, port id %d, groups %v\n", n.ID, n.Protocol, n.PortID, n.Groups)
	}
	users := descUsers(img.Processes)
	for _, p := range img.Processes {
		printProcess(out, p, users)
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

func printProcess(out io.Writer, p *format.Process, users map[int][]string) {
	fmt.Fprintf(out, "\nprocess %d (%s) parent %d, group %d, session %d, uid %d\n", p.PID, p.Comm, p.PPID, p.PGID, p.SID, p.Creds.UID[0])
	if p.Zombie {
		fmt.Fprintf(out, "  zombie: wait status %#x\n", p.WaitStatus)
		return
	}
	fmt.Fprintf(out, "  exe %s\n  cwd %s\n  cmdline %s\n", p.Exe, p.Cwd, strings.Join(p.Cmdline, " "))
	for _, t := range p.Threads {
		fmt.Fprintf(out, "  thread %d (%s): rip %#x rsp %#x, blocked %#x, %d pending, xsave %d bytes\n",
			t.TID, t.Comm, t.Regs.Rip, t.Regs.Rsp, t.SigMask, len(t.Pending), len(t.XSave))
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  memory\tprot\tkind\tsaved\tname")
	for _, v := range p.VMAs {
		saved := uint64(0)
		for _, r := range v.Pages {
			saved += r.Len
		}
		fmt.Fprintf(tw, "  %x-%x\t%s\t%s\t%s\t%s%s\n", v.Start, v.End, protString(v), v.Kind, bytesString(int64(saved)), v.Name, vmaDetails(v))
	}
	fmt.Fprintln(tw, "  fd\tkind\tflags\toffset\tpath\tshared with")
	for _, f := range p.Files {
		var others []string
		for _, u := range users[f.Desc] {
			if u != fmt.Sprintf("%d:%d", p.PID, f.FD) {
				others = append(others, u)
			}
		}
		fmt.Fprintf(tw, "  %d\t%s\t%#o\t%d\t%s\t%s\n", f.FD, f.Kind, f.Flags, f.Pos, f.Path, strings.Join(others, " "))
		if d := fileDetails(f); d != "" {
			fmt.Fprintf(tw, "  \t\t\t\t%s\t\n", d)
		}
	}
	tw.Flush()
	var sigs []string
	for _, s := range p.Sigactions {
		sigs = append(sigs, fmt.Sprintf("%d:%#x", s.Signal, s.Handler))
	}
	fmt.Fprintf(out, "  signal actions: %s\n", strings.Join(sigs, " "))
	if m := p.Memory; m != nil {
		fmt.Fprintf(out, "  memory: lock future %q, KSM merge all %v, THP disabled %v\n", m.LockFuture, m.MergeAny, m.THPDisable)
	}
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
