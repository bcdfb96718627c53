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
		ArgsUsage: "IMAGE",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
			&cli.BoolFlag{Name: "verify", Usage: "also read and check all page data"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%w: inspect takes one image file", errUsage)
			}
			img, err := format.Open(c.Args().First())
			if err != nil {
				return fmt.Errorf("inspect %s: %w", c.Args().First(), err)
			}
			defer img.Close()
			if c.Bool("verify") {
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
		format.Version, h.Arch, h.Kernel, h.Created.Local().Format("2006-01-02 15:04:05"), h.Hostname, h.Tool)
	fmt.Fprintf(out, "processes: %d, data: %s, %d pipes, %d shared memory objects\n",
		h.Processes, bytesString(h.DataBytes), len(img.Objects.Pipes), len(img.Objects.Shm))
	for _, s := range img.Objects.InetSockets {
		fmt.Fprintf(out, "  inet socket %d: %s\n", s.ID, inetLine(s))
	}
	printTree(out, img.Processes)
	printExternals(out, img)
	printTerminals(out, img)
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
		fmt.Fprintf(tw, "  %x-%x\t%s\t%s\t%s\t%s\n", v.Start, v.End, protString(v), v.Kind, bytesString(int64(saved)), v.Name)
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
	}
	tw.Flush()
	var sigs []string
	for _, s := range p.Sigactions {
		sigs = append(sigs, fmt.Sprintf("%d:%#x", s.Signal, s.Handler))
	}
	fmt.Fprintf(out, "  signal actions: %s\n", strings.Join(sigs, " "))
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
