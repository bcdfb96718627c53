package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// flagsFirst lets users write flags after arguments ("chpox dump PID -o
// FILE"), which urfave/cli/v2 does not parse: it moves the flags of the
// named subcommand in front of its arguments. Everything after "--" stays.
func flagsFirst(args []string, cmds []*cli.Command) []string {
	// A completion request must stay last, where urfave/cli looks for it.
	if n := len(args); n > 1 && args[n-1] == "--generate-bash-completion" {
		return append(flagsFirst(args[:n-1], cmds), args[n-1])
	}
	if len(args) < 2 {
		return args
	}
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") { // global flags
		i++
	}
	if i >= len(args) {
		return args
	}
	var cmd *cli.Command
	for _, c := range cmds {
		if c.HasName(args[i]) {
			cmd = c
		}
	}
	if cmd == nil || cmd.Name == "run" {
		return args // run: everything after the flags belongs to the job
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	out := append([]string{}, args[:i+1]...)
	var flags, rest []string
	rest_ := args[i+1:]
	for j := 0; j < len(rest_); j++ {
		a := rest_[j]
		if a == "--" {
			rest = append(rest, rest_[j:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if !strings.Contains(name, "=") && takesValue[name] && j+1 < len(rest_) {
			j++
			flags = append(flags, rest_[j])
		}
	}
	return append(append(out, flags...), rest...)
}
