package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/chpox/chpox/pkg/probe"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "tell what this machine and user let chpox do",
		Description: "Tries each kernel feature and privilege chpox needs or uses (harmlessly: a child of its own\n" +
			"is seized, a socket and a userfaultfd are opened) and says, for each one missing, what it costs.\n" +
			"Exits 1 when chpox cannot checkpoint anything here.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return fmt.Errorf("%w: check takes no arguments", errUsage)
			}
			r := probe.Run(tracer)
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				printCheck(os.Stdout, r)
			}
			if !r.Usable() {
				return exitCode(1)
			}
			return nil
		},
	}
}

func printCheck(out io.Writer, r *probe.Report) {
	fmt.Fprintf(out, "kernel %s, %s, uid %d\n", r.Kernel, r.Arch, r.UID)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, it := range r.Items {
		mark := "ok"
		if !it.OK {
			mark = "missing"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", mark, it.Name, it.Detail)
		if !it.OK && it.Cost != "" {
			fmt.Fprintf(w, "\t\tcosts: %s\n", it.Cost)
		}
	}
	w.Flush()
}
