package main

import (
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/external"
	"github.com/chpox/chpox/pkg/probe"
	"github.com/chpox/chpox/pkg/restore"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "bring a checkpointed process back with its PID; waits for it unless --detach",
		ArgsUsage: "IMAGE (- reads it from standard input)",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "return once the process runs and print its PID"},
			&cli.BoolFlag{Name: "lazy", Usage: "let the process run before its memory is all copied back: chpox fills it on first touch and in the background, and exits (with --detach) only when all is in"},
			&cli.DurationFlag{Name: "pid-wait", Value: 2 * time.Second, Usage: "how long to wait for an exited original to release its PID"},
			&cli.StringSliceFlag{Name: "external", Usage: "`KEY=FD|closed|null`: what to give a descriptor that was shared with a process outside the checkpoint (KEY as 'chpox inspect' lists it; FD a descriptor of chpox restore; stdin, stdout and stderr default to chpox restore's own)"},
			quietFlag(),
		}, namespaceFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%w: restore takes one image file, got %d arguments", errUsage, c.NArg())
			}
			if !c.Bool(nsInitFlag) && (c.Bool("namespace") || c.Int("copies") != 1 || !probe.CanChoosePIDs()) {
				if c.Args().First() == "-" {
					return fmt.Errorf("%w: restore - (from standard input) restores in this PID namespace only, which needs root or CAP_SYS_ADMIN and no --namespace or --copies; save the stream to a file and restore that", errUsage)
				}
				if c.Bool("lazy") {
					fmt.Fprintln(say(c), "chpox: --lazy not used: restore in new namespaces (--namespace, --copies, or without the right to choose PIDs)")
				}
				return restoreInNamespaces(c, c.Args().First())
			}
			// Signals that arrive while the process is being built must not
			// kill chpox half way; they are forwarded once it runs.
			sigs := make(chan os.Signal, 4)
			notifyTermination(sigs)
			opt := restore.Options{PIDWaitMS: int(c.Duration("pid-wait").Milliseconds()), Externals: map[string]external.Choice{}, Detach: c.Bool("detach"), Lazy: c.Bool("lazy")}
			for _, s := range c.StringSlice("external") {
				key, choice, err := external.ParseChoice(s)
				if err != nil {
					return fmt.Errorf("%w: --external %w", errUsage, err)
				}
				opt.Externals[key] = choice
			}
			if c.Bool(nsInitFlag) {
				signal.Stop(sigs)
				return nsInit(c, c.Args().First(), opt)
			}
			takeBack := func() {}
			defer func() { takeBack() }()
			var job restore.Job
			handed := false
			if !c.Bool("detach") {
				opt.Foreground = true
				opt.BeforeRun = func(j restore.Job) { job = j; takeBack, handed = handTerminal(j) }
			}
			opt.Progress = &format.Progress{}
			stop := showProgress(c, "restore "+c.Args().First(), opt.Progress)
			r, err := restore.Restore(tracer, c.Args().First(), opt)
			stop()
			if err != nil {
				return err
			}
			if handed {
				tellSize(job)
			}
			if r.NotLazy != "" {
				fmt.Fprintf(say(c), "chpox: --lazy not used: %s\n", r.NotLazy)
			}
			if c.Bool("detach") {
				fmt.Println(r.PID)
				return lazyDone(c, r)
			}
			// The copy goes on while chpox waits for the process.
			done := make(chan error, 1)
			go func() { done <- lazyDone(c, r) }()
			code := waitForeground(r, sigs)
			if err := <-done; err != nil {
				fmt.Fprintf(os.Stderr, "chpox: %v\n", err)
			}
			return exitCode(code)
		},
	}
}

// lazyDone waits until a lazy restore has all memory in: chpox must not
// exit before (pkg/lazy: its guard would kill the tree).
func lazyDone(c *cli.Context, r *restore.Restored) error {
	if r.Lazy == nil {
		return nil
	}
	st, err := r.Lazy.Wait()
	if err != nil {
		return fmt.Errorf("lazy restore: %w", err)
	}
	fmt.Fprintf(say(c), "chpox: all memory in after %v (%d MiB in the background, %d faults answered with %d MiB, %d with zero pages)\n",
		st.Took.Round(time.Millisecond), st.BackgroundBytes>>20, st.Faults, st.FaultBytes>>20, st.Zeros)
	return nil
}

// notifyTermination sends the signals that end a foreground job to sigs:
// chpox forwards them to what it restored instead of dying of them.
func notifyTermination(sigs chan<- os.Signal) {
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
}

// waitForeground waits for the restored process like a shell waits for a
// job, forwarding termination signals, and returns its exit status.
func waitForeground(r *restore.Restored, sigs <-chan os.Signal) int {
	go forward(sigs, r.PID)
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(r.PID, &ws, 0, nil); err != unix.EINTR {
			break
		}
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
