// Command chpox checkpoints and restores Linux processes from userspace.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/lazy"
	"github.com/chpox/chpox/pkg/netlock"
	"github.com/chpox/chpox/pkg/ptrace"
)

// tracer owns every ptrace request of this process (see pkg/ptrace).
var tracer *ptrace.Tracer

func main() {
	if len(os.Args) == 2 && os.Args[1] == netlock.GuardCommand {
		os.Exit(netlock.RunGuard()) // started by a dump (pkg/netlock), not by people
	}
	if len(os.Args) == 2 && os.Args[1] == lazy.GuardCommand {
		os.Exit(lazy.RunGuard()) // started by a restore --lazy (pkg/lazy)
	}
	dump.Version = version()
	app := newApp()
	if err := app.Run(flagsFirst(os.Args, app.Commands)); err != nil {
		os.Exit(report(err))
	}
}

// newApp is the whole command line: main runs it, `chpox man` and the
// completion scripts are generated from it.
func newApp() *cli.App {
	app := &cli.App{
		Name:    "chpox",
		Usage:   "checkpoint and restore Linux processes",
		Version: dump.Version,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log diagnostics to stderr"},
		},
		Before: func(c *cli.Context) error {
			level := slog.LevelWarn
			if c.Bool("verbose") {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
			tracer = ptrace.NewTracer()
			return nil
		},
		Commands: []*cli.Command{runCommand(), dumpCommand(), restoreCommand(), inspectCommand(), checkCommand(),
			completionCommand(), manCommand()},
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		// No command: show help, but as a usage error.
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("%w: unknown command %q", errUsage, c.Args().First())
			}
			cli.ShowAppHelp(c)
			return errUsage
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return fmt.Errorf("%w: %v", errUsage, err)
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main reports errors itself
	}
	for _, c := range app.Commands {
		c.OnUsageError = app.OnUsageError
	}
	return app
}

// report prints err for people and returns the exit code.
func report(err error) int {
	var ec exitCode
	if errors.As(err, &ec) {
		return int(ec)
	}
	code, hint := classify(err)
	fmt.Fprintf(os.Stderr, "chpox: %v\n", err)
	if hint != "" {
		fmt.Fprintf(os.Stderr, "chpox: %s\n", hint)
	}
	return code
}

// exitCode passes a restored process's exit status through as ours.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
