package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/restore"
	"github.com/chpox/chpox/pkg/vmadump"
)

func commands() []*cli.Command {
	return []*cli.Command{dumpCommand(), restoreCommand(), inspectCommand()}
}

func TestFlagsFirst(t *testing.T) {
	cases := []struct {
		name     string
		in, want []string
	}{
		{"value flag after the PID", []string{"chpox", "dump", "123", "-o", "a.chp"}, []string{"chpox", "dump", "-o", "a.chp", "123"}},
		{"long value flag", []string{"chpox", "dump", "123", "--output", "a.chp"}, []string{"chpox", "dump", "--output", "a.chp", "123"}},
		{"--flag=value", []string{"chpox", "dump", "123", "--output=a.chp"}, []string{"chpox", "dump", "--output=a.chp", "123"}},
		{"-f=value", []string{"chpox", "dump", "123", "-o=a.chp"}, []string{"chpox", "dump", "-o=a.chp", "123"}},
		{"bool flag does not take the next argument", []string{"chpox", "dump", "--kill", "123"}, []string{"chpox", "dump", "--kill", "123"}},
		{"bool and value flags after", []string{"chpox", "dump", "123", "--kill", "-o", "x"}, []string{"chpox", "dump", "--kill", "-o", "x", "123"}},
		{"bool flag after the image", []string{"chpox", "inspect", "a.chp", "--json", "--verify"}, []string{"chpox", "inspect", "--json", "--verify", "a.chp"}},
		{"bool alias", []string{"chpox", "restore", "a.chp", "-d"}, []string{"chpox", "restore", "-d", "a.chp"}},
		{"duration flag", []string{"chpox", "restore", "a.chp", "--pid-wait", "5s", "-d"}, []string{"chpox", "restore", "--pid-wait", "5s", "-d", "a.chp"}},
		{"value that looks like a flag", []string{"chpox", "dump", "1", "-o", "-x"}, []string{"chpox", "dump", "-o", "-x", "1"}},
		{"lone dash is an argument", []string{"chpox", "dump", "1", "-o", "x", "-"}, []string{"chpox", "dump", "-o", "x", "1", "-"}},
		{"global flags stay in front", []string{"chpox", "-v", "dump", "1", "-o", "x"}, []string{"chpox", "-v", "dump", "-o", "x", "1"}},
		{"-- ends the flags", []string{"chpox", "dump", "1", "--", "-o", "x"}, []string{"chpox", "dump", "1", "--", "-o", "x"}},
		{"flags before -- move, after stay", []string{"chpox", "dump", "1", "--kill", "--", "--json"}, []string{"chpox", "dump", "--kill", "1", "--", "--json"}},
		{"flags already first", []string{"chpox", "dump", "-o", "x", "1"}, []string{"chpox", "dump", "-o", "x", "1"}},
		{"unknown command untouched", []string{"chpox", "frob", "1", "-o", "x"}, []string{"chpox", "frob", "1", "-o", "x"}},
		{"no command", []string{"chpox"}, []string{"chpox"}},
		{"only global flags", []string{"chpox", "-v", "--help"}, []string{"chpox", "-v", "--help"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := append([]string(nil), c.in...)
			got := flagsFirst(in, commands())
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("flagsFirst(%q) (-want +got):\n%s", c.in, d)
			}
			if !cmp.Equal(in, c.in) {
				t.Errorf("flagsFirst changed its input to %q", in)
			}
			if again := flagsFirst(got, commands()); !cmp.Equal(again, got) {
				t.Errorf("flagsFirst is not idempotent: %q then %q", got, again)
			}
		})
	}
}

// TestFlagsFirstParses runs reordered command lines through urfave/cli with
// the real flag definitions and checks what the command sees.
func TestFlagsFirstParses(t *testing.T) {
	type seen struct {
		Cmd     string
		Args    []string
		Output  string
		Kill    bool
		Detach  bool
		PIDWait time.Duration
	}
	parse := func(args []string) (seen, error) {
		var s seen
		cmds := commands()
		for _, c := range cmds {
			c.Action = func(ctx *cli.Context) error {
				s = seen{Cmd: ctx.Command.Name, Args: ctx.Args().Slice()}
				if ctx.Command.Name == "dump" {
					s.Output, s.Kill = ctx.String("output"), ctx.Bool("kill")
				}
				if ctx.Command.Name == "restore" {
					s.Detach, s.PIDWait = ctx.Bool("detach"), ctx.Duration("pid-wait")
				}
				return nil
			}
		}
		app := &cli.App{
			Name: "chpox", Commands: cmds,
			Flags:          []cli.Flag{&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}}},
			Writer:         os.Stderr,
			ExitErrHandler: func(*cli.Context, error) {},
		}
		err := app.Run(flagsFirst(args, cmds))
		return s, err
	}
	cases := []struct {
		in   []string
		want seen
	}{
		{[]string{"chpox", "dump", "42", "-o", "a.chp", "--kill"}, seen{Cmd: "dump", Args: []string{"42"}, Output: "a.chp", Kill: true}},
		{[]string{"chpox", "-v", "dump", "42", "--output=b.chp"}, seen{Cmd: "dump", Args: []string{"42"}, Output: "b.chp"}},
		{[]string{"chpox", "restore", "a.chp", "--pid-wait", "250ms", "-d"}, seen{Cmd: "restore", Args: []string{"a.chp"}, Detach: true, PIDWait: 250 * time.Millisecond}},
		{[]string{"chpox", "restore", "a.chp"}, seen{Cmd: "restore", Args: []string{"a.chp"}, PIDWait: 2 * time.Second}},
	}
	for _, c := range cases {
		got, err := parse(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if d := cmp.Diff(c.want, got); d != "" {
			t.Errorf("%q (-want +got):\n%s", c.in, d)
		}
	}
}

func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("dump 42: memory 0x1000-0x2000: %w", err) }
	cases := []struct {
		name string
		err  error
		code int
		hint bool
	}{
		{"usage", fmt.Errorf("%w: unknown command %q", errUsage, "frob"), exitUsage, true},
		{"no process", wrap(procinfo.ErrNoProcess), exitNoProcess, true},
		{"pid in use", wrap(restore.ErrPIDInUse), exitPIDInUse, true},
		{"checksum", wrap(format.ErrChecksum), exitBadImage, true},
		{"corrupt", wrap(format.ErrCorrupt), exitBadImage, true},
		{"truncated", wrap(format.ErrTruncated), exitBadImage, true},
		{"bad magic", wrap(format.ErrBadMagic), exitBadImage, false},
		{"version", wrap(format.ErrVersion), exitBadImage, false},
		{"incompatible", wrap(restore.ErrIncompatible), exitBadImage, false},
		{"unsupported (procinfo)", wrap(procinfo.ErrUnsupported), exitUnsupported, true},
		{"unsupported (dump)", wrap(dump.ErrUnsupported), exitUnsupported, true},
		// System V shared memory is refused by vmadump with its own
		// sentinel; usage.md promises exit code 6 for it too.
		{"unsupported (vmadump, System V shm)", wrap(vmadump.ErrUnsupported), exitUnsupported, true},
		{"permission", wrap(os.NewSyscallError("ptrace(PTRACE_SEIZE)", errors.New("operation not permitted"))), exitFailure, true},
		{"joined: first match wins", errors.Join(errors.New("x"), restore.ErrPIDInUse), exitPIDInUse, true},
		{"other", errors.New("disk on fire"), exitFailure, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, hint := classify(c.err)
			if code != c.code {
				t.Errorf("classify(%q) = %d, want %d", c.err, code, c.code)
			}
			if (hint != "") != c.hint {
				t.Errorf("classify(%q) hint %q, want a hint: %v", c.err, hint, c.hint)
			}
		})
	}
	if _, hint := classify(wrap(os.NewSyscallError("ptrace", errors.New("operation not permitted")))); !strings.Contains(hint, "root") {
		t.Errorf("EPERM hint %q does not mention root", hint)
	}
	// An owner dumping its own process lacks no ptrace right: other EPERMs
	// get no such advice.
	if _, hint := classify(errors.New("dump 12: stat mapped file /usr/bin/sleep: operation not permitted")); hint != "" {
		t.Errorf("a stat EPERM got the ptrace hint %q", hint)
	}
}

// TestReport: exit status of a restored program passes through unchanged.
func TestReport(t *testing.T) {
	if got := report(fmt.Errorf("restore: %w", exitCode(137))); got != 137 {
		t.Errorf("report(exitCode(137)) = %d", got)
	}
	if got := report(fmt.Errorf("%w: bad", errUsage)); got != exitUsage {
		t.Errorf("report(usage) = %d", got)
	}
}
