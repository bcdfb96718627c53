package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/supervisor"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a job as a registered process tree that checkpoints itself on a signal",
		ArgsUsage: "-- COMMAND [ARGS...] | --attach PID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "signal", Aliases: []string{"s"}, Usage: "`SIGNAL` (number or name) that triggers a checkpoint; the job must not use it", Value: "SIGUSR2"},
			&cli.DurationFlag{Name: "interval", Usage: "also checkpoint every `DURATION` (e.g. 10m)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "image `FILE`, replaced atomically at every checkpoint (default: the command's name + .chp, in the current directory)"},
			&cli.BoolFlag{Name: "live", Value: true, Usage: "copy memory while the job runs (frozen for milliseconds), and from the second checkpoint on only the pages written since the last; --live=false keeps the job frozen for the whole copy"},
			&cli.IntFlag{Name: "attach", Usage: "make the running process `PID` and its descendants the job instead of starting one: chpox seizes the tree (it stops for milliseconds) and, on SIGINT, SIGTERM, SIGHUP or SIGQUIT, lets it go on untraced"},
			&cli.BoolFlag{Name: "embed-files", Usage: "store the executable, libraries and other mapped files in every image, so it restores where they differ or are missing"},
			quietFlag(),
		},
		Action: func(c *cli.Context) error {
			attach := c.Int("attach")
			switch {
			case attach != 0 && c.NArg() > 0:
				return fmt.Errorf("%w: run takes a command or --attach PID, not both", errUsage)
			case attach < 0:
				return fmt.Errorf("%w: --attach %d is not a PID", errUsage, attach)
			case attach == 0 && c.NArg() == 0:
				return fmt.Errorf("%w: run needs a command: chpox run -o job.chp -- ./job (or --attach PID)", errUsage)
			}
			if attach != 0 {
				if err := attachable(attach); err != nil {
					return err
				}
			}
			output := c.String("output")
			if output == "" && attach != 0 {
				output = imageName(procinfo.ThreadComm(attach))
			} else if output == "" {
				// As the design card writes it: chpox run --signal 31 ./app
				output = filepath.Base(c.Args().First()) + ".chp"
			}
			sig, err := parseSignal(c.String("signal"))
			if err != nil {
				return err
			}
			out, err := filepath.Abs(output)
			if err != nil {
				return err
			}
			// Say now, not at the first checkpoint, that -o cannot work.
			if err := dump.CheckOutput(out, 0, true); err != nil {
				return err
			}
			// The job gets stdin, stdout and stderr only: descriptors that
			// leaked into chpox would be part of every checkpoint.
			unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
			// Set up forwarding before the job starts, so no signal is lost.
			sigs := make(chan os.Signal, 4)
			for _, f := range []unix.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT} {
				if f != sig {
					signal.Notify(sigs, f)
				}
			}
			// The trigger sent to chpox itself checkpoints the job too: a
			// batch script that execs chpox run is what Slurm signals
			// (sbatch --signal=B:USR2, scancel -b -s USR2).
			triggers := make(chan os.Signal, 1)
			signal.Notify(triggers, sig)
			opt := supervisor.Options{
				Args: c.Args().Slice(), Signal: sig, Interval: c.Duration("interval"), Output: out, Log: say(c), Errors: os.Stderr,
				EmbedFiles: c.Bool("embed-files"), Live: c.Bool("live"),
			}
			var s *supervisor.Supervisor
			if attach != 0 {
				s, err = supervisor.Attach(tracer, attach, opt)
			} else {
				s, err = supervisor.Start(tracer, opt)
			}
			if err != nil {
				return err
			}
			if err := s.Listen(); err != nil {
				fmt.Fprintf(os.Stderr, "chpox: %v (chpox dump of this job will not work)\n", err)
			}
			fmt.Fprintf(say(c), "chpox: job pid %d; checkpoint on %s (%d) to %s\n", s.PID(), unix.SignalName(sig), sig, out)
			if attach != 0 {
				// Not the job's signals: chpox's, to stop watching it.
				go func() {
					for range sigs {
						s.Detach()
					}
				}()
			} else {
				go forward(sigs, s.PID())
			}
			go func() {
				for range triggers {
					if err := s.Trigger(); err != nil {
						fmt.Fprintf(os.Stderr, "chpox: checkpoint on %s sent to chpox: %v\n", unix.SignalName(sig), err)
					}
				}
			}()
			status, err := s.Wait()
			if errors.Is(err, supervisor.ErrDetached) {
				fmt.Fprintf(say(c), "chpox: detached from pid %d; it runs on, untraced\n", s.PID())
				return nil
			}
			if err != nil {
				return err
			}
			return exitCode(status)
		},
	}
}

// attachable refuses --attach of what chpox cannot supervise: a thread
// that is not a process's main one, and chpox's own ancestors (frozen,
// the shell that waits for chpox, or init, would hold chpox up).
func attachable(pid int) error {
	switch tgid := procinfo.TGID(pid); {
	case tgid == 0:
		return fmt.Errorf("--attach %d: %w", pid, procinfo.ErrNoProcess)
	case tgid != pid:
		return fmt.Errorf("%w: --attach %d: that is a thread of process %d; attach the process", errUsage, pid, tgid)
	}
	for p := os.Getpid(); p > 0; p = procinfo.ParentOf(p) {
		if p == pid {
			return fmt.Errorf("%w: --attach %d: that is chpox itself or one of its ancestors", errUsage, pid)
		}
	}
	return nil
}

// imageName is the default image of an attached process: its name, made
// a file name.
func imageName(comm string) string {
	comm = strings.ReplaceAll(comm, "/", "_")
	if comm == "" || comm == "." || comm == ".." {
		comm = "job"
	}
	return comm + ".chp"
}

// parseSignal takes 31, SIGUSR2 or USR2.
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return checkTrigger(unix.Signal(n))
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return checkTrigger(sig)
	}
	return 0, fmt.Errorf("%w: %q is not a signal (use a number or a name like SIGUSR2)", errUsage, s)
}

// forward passes termination signals sent to chpox on to the job, as a
// shell user expects. SIGINT and SIGQUIT from a terminal reach the whole
// foreground process group, so they are forwarded only to a job in another
// group (else it would get them twice).
func forward(sigs <-chan os.Signal, pid int) {
	for s := range sigs {
		if s == unix.SIGINT || s == unix.SIGQUIT {
			if g, err := unix.Getpgid(pid); err == nil && g == unix.Getpgrp() {
				continue
			}
		}
		unix.Kill(pid, s.(unix.Signal))
	}
}

// checkTrigger refuses signals that cannot be a trigger: KILL and STOP are
// never seen, and a fault signal (SEGV, BUS, ILL, FPE, TRAP) kept back from
// the job would make the faulting instruction run again forever.
func checkTrigger(sig unix.Signal) (unix.Signal, error) {
	switch sig {
	case unix.SIGKILL, unix.SIGSTOP, unix.SIGSEGV, unix.SIGBUS, unix.SIGILL, unix.SIGFPE, unix.SIGTRAP:
		return 0, fmt.Errorf("%w: %s cannot trigger checkpoints (pick one the job does not use, e.g. SIGUSR2 or 31)", errUsage, unix.SignalName(sig))
	}
	return sig, nil
}
