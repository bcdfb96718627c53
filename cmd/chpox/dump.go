package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/ptrace"
	"github.com/chpox/chpox/pkg/supervisor"
)

func dumpCommand() *cli.Command {
	return &cli.Command{
		Name:      "dump",
		Usage:     "checkpoint a running process into an image; it keeps running",
		ArgsUsage: "PID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "image `FILE` to write (replaced atomically); - writes it to standard output (a pipe: dump --kill PID -o - | ssh host chpox restore -)"},
			&cli.BoolFlag{Name: "compress", Usage: "store the data zstd-compressed, on all CPUs (pays when the disk or network is slower than the compression; see docs/usage.md)"},
			&cli.BoolFlag{Name: "kill", Usage: "kill the process (and its descendants) after a successful checkpoint"},
			&cli.BoolFlag{Name: "live", Value: true, Usage: "copy memory while the processes run (userfaultfd write tracking): they are frozen for milliseconds, not for the whole copy; falls back to the frozen copy where it cannot. The default, except with --kill (the processes die anyway); --live=false copies frozen"},
			&cli.BoolFlag{Name: "no-children", Usage: "checkpoint the process alone, without its descendants"},
			&cli.StringSliceFlag{Name: "ipc", Usage: "`KIND:ID` (shm, sem or msg and its id): a System V object that belongs to the checkpoint although no process of it is recorded as its last user (repeat for more)"},
			&cli.DurationFlag{Name: "stop-timeout", Value: ptrace.StopTimeout, Usage: "how long to wait for each process to stop (one in uninterruptible sleep, or waiting for a vfork child, does not); then the dump fails and everything runs on"},
			&cli.BoolFlag{Name: "embed-files", Usage: "store the executable, libraries and other mapped files in the image, so it restores where they differ or are missing"},
			quietFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%w: dump takes one PID, got %d arguments", errUsage, c.NArg())
			}
			if c.String("output") == "" {
				return fmt.Errorf("%w: dump needs -o FILE, the image to write", errUsage)
			}
			if c.String("output") == "-" {
				if _, err := unix.IoctlGetTermios(1, unix.TCGETS); err == nil {
					return fmt.Errorf("%w: -o - writes the image to standard output, which is a terminal: pipe it into a command or a file", errUsage)
				}
			}
			ptrace.StopTimeout = c.Duration("stop-timeout")
			pid, err := strconv.Atoi(c.Args().First())
			if err != nil || pid <= 0 {
				return fmt.Errorf("%w: %q is not a PID", errUsage, c.Args().First())
			}
			// Ctrl-C while the processes are frozen must not leave them
			// half-injected: the dump notices, puts them back and stops.
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
			interrupted := func() bool { return len(sigs) > 0 }
			opt := dump.Options{Output: c.String("output"), Kill: c.Bool("kill"), NoChildren: c.Bool("no-children"), Interrupted: interrupted,
				Progress: &format.Progress{}, Compress: c.Bool("compress"), Live: c.Bool("live") && (!c.Bool("kill") || c.IsSet("live")), EmbedFiles: c.Bool("embed-files")}
			for _, s := range c.StringSlice("ipc") {
				ref, err := sysv.ParseRef(s)
				if err != nil {
					return fmt.Errorf("%w: --ipc %w", errUsage, err)
				}
				opt.IPC = append(opt.IPC, ref)
			}
			stop := showProgress(c, fmt.Sprintf("dump %d", pid), opt.Progress)
			res, err := dumpAny(pid, opt)
			stop()
			if err != nil {
				return err
			}
			out := say(c)
			where := opt.Output
			if where == "-" {
				where = "standard output"
			}
			ratio := ""
			if opt.Compress && res.Bytes > 0 {
				ratio = fmt.Sprintf(" (%s of data, compressed %.2fx)", bytesString(res.DataBytes), float64(res.DataBytes)/float64(res.Bytes))
			}
			fmt.Fprintf(out, "chpox: checkpoint of pid %d written to %s: %d processes, %s%s, frozen %s\n",
				pid, where, res.Processes, bytesString(res.Bytes), ratio, res.Frozen.Round(100_000))
			switch {
			case res.NotLive != "":
				fmt.Fprintf(out, "chpox: --live not used (%s): memory was copied with the processes frozen\n", res.NotLive)
			case opt.Live:
				fmt.Fprintf(out, "chpox: live copy: %d rounds while running\n", res.Rounds)
			}
			if len(res.LeftOut) > 0 {
				fmt.Fprintf(out, "chpox: its children %v are left out (--no-children); the image restores pid %d alone\n", res.LeftOut, pid)
			}
			if c.Bool("kill") {
				fmt.Fprintf(out, "chpox: pid %d killed after the checkpoint\n", pid)
			}
			if msg := outsideNote(res.OutsideTCP, c.Bool("kill")); msg != "" {
				fmt.Fprintln(out, msg)
			}
			if res.SysV > 0 && c.Bool("kill") {
				fmt.Fprintf(os.Stderr, "chpox: %d System V IPC objects went into the image and were removed with the processes; restore creates them again with their keys and ids\n", res.SysV)
			} else if res.SysV > 0 {
				fmt.Fprintf(os.Stderr, "chpox: %d System V IPC objects are in the image and stay in use; a restore needs their keys and ids free (ipcrm them once the processes are gone, or dump with --kill)\n", res.SysV)
			}
			return nil
		},
	}
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// dumpAny checkpoints pid itself, or asks the `chpox run` that traces it:
// a second tracer cannot attach.
func dumpAny(pid int, opt dump.Options) (*dump.Result, error) {
	if tp := procinfo.TracerPID(pid); tp > 0 {
		if opt.Output == "-" || opt.Compress {
			if procinfo.ThreadComm(tp) == "chpox" {
				return nil, fmt.Errorf("%w: pid %d is supervised by chpox run (pid %d), which writes its images to files itself: -o - and --compress are for a direct dump", errUsage, pid, tp)
			}
		}
		out, err := filepath.Abs(opt.Output)
		if err != nil {
			return nil, err
		}
		if len(opt.IPC) > 0 && procinfo.ThreadComm(tp) == "chpox" {
			return nil, fmt.Errorf("%w: pid %d is traced by pid %d; a supervised tree is checkpointed without --ipc", errUsage, pid, tp)
		}
		if opt.EmbedFiles && procinfo.ThreadComm(tp) == "chpox" {
			return nil, fmt.Errorf("%w: pid %d is traced by pid %d; a supervised tree embeds files as its chpox run was told (chpox run --embed-files)", errUsage, pid, tp)
		}
		if opt.NoChildren && procinfo.ThreadComm(tp) == "chpox" {
			return nil, fmt.Errorf("%w: pid %d is traced by pid %d; a supervised tree is checkpointed whole (no --no-children)", errUsage, pid, tp)
		}
		res, err := supervisor.RequestDump(tp, pid, out, opt.Kill)
		if !errors.Is(err, supervisor.ErrNotSupervised) {
			return res, err
		}
	}
	return dump.Dump(tracer, pid, opt)
}

// outsideNote says what the image will do with TCP connections to peers
// outside the checkpoint (docs/usage.md, "TCP and UDP").
func outsideNote(n int, kill bool) string {
	if n == 0 {
		return ""
	}
	conns, are, goes := fmt.Sprintf("%d TCP connections", n), "are", "go"
	if n == 1 {
		conns, are, goes = "1 TCP connection", "is", "goes"
	}
	if kill {
		return fmt.Sprintf("chpox: %s to peers outside the checkpoint %s held (network lock, `nft list table inet chpox`) until `chpox restore` resumes them; the peers see only a pause", conns, are)
	}
	return fmt.Sprintf("chpox: %s to peers outside the checkpoint %s on in the running process; restoring the image while it runs fails (the connections exist), and after it ends its peers have seen them close: restored, they would be reset. Use --kill to move them", conns, goes)
}
