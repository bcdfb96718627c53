package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/chpox/chpox/pkg/dump"
)

func dumpCommand() *cli.Command {
	return &cli.Command{
		Name:      "dump",
		Usage:     "checkpoint a running process into an image; it keeps running",
		ArgsUsage: "PID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "image `FILE` to write (replaced atomically)"},
			&cli.BoolFlag{Name: "kill", Usage: "kill the process after a successful checkpoint"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%w: dump takes one PID, got %d arguments", errUsage, c.NArg())
			}
			if c.String("output") == "" {
				return fmt.Errorf("%w: dump needs -o FILE, the image to write", errUsage)
			}
			pid, err := strconv.Atoi(c.Args().First())
			if err != nil || pid <= 0 {
				return fmt.Errorf("%w: %q is not a PID", errUsage, c.Args().First())
			}
			res, err := dump.Dump(tracer, pid, dump.Options{Output: c.String("output"), Kill: c.Bool("kill")})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "chpox: checkpoint of pid %d written to %s: %d process, %s, frozen %s\n",
				pid, c.String("output"), res.Processes, bytesString(res.Bytes), res.Frozen.Round(100_000))
			if c.Bool("kill") {
				fmt.Fprintf(os.Stderr, "chpox: pid %d killed after the checkpoint\n", pid)
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
