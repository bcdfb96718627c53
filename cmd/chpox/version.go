package main

import (
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// buildVersion is set by the Makefile (-ldflags -X) to `git describe
// --always --dirty`: GOFLAGS=-buildvcs=false, as on these machines, keeps Go
// from recording the commit itself.
var buildVersion string

// version names this build: what the Makefile stamped, the module version
// when built from a tagged module, else the commit Go recorded (+dirty when
// the tree had uncommitted changes). It is printed by --version and written
// into every image (the header's tool), so an image tells which chpox made
// it.
func version() string {
	if buildVersion != "" {
		return "chpox " + buildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "chpox (unknown build)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return "chpox " + v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(12, len(s.Value))]
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "chpox (devel)"
	}
	if dirty {
		rev += "+dirty"
	}
	return "chpox devel-" + rev
}

func init() {
	// urfave/cli gives --version the alias -v, which is --verbose here.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print chpox's version"}
	cli.VersionPrinter = func(c *cli.Context) { c.App.Writer.Write([]byte(c.App.Version + "\n")) }
}
