package main

import (
	"errors"
	"strings"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/external"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/restore"
)

// Exit codes, documented in docs/usage.md.
const (
	exitFailure     = 1
	exitUsage       = 2
	exitNoProcess   = 3
	exitPIDInUse    = 4
	exitBadImage    = 5
	exitUnsupported = 6
)

// classify turns typed errors from the packages into an exit code and a
// hint that says what to do.
func classify(err error) (int, string) {
	switch {
	case errors.Is(err, errUsage):
		return exitUsage, "run 'chpox --help' for usage"
	case errors.Is(err, external.ErrNoChoice):
		return exitUsage, "'chpox inspect IMAGE' lists the descriptors that were shared with outside processes"
	case errors.Is(err, procinfo.ErrNoProcess):
		return exitNoProcess, "check the PID with 'ps'"
	case errors.Is(err, sysv.ErrNoObject):
		return exitUsage, "nothing was written; the processes run on unchanged"
	case errors.Is(err, sysv.ErrTaken):
		return exitPIDInUse, "nothing was restored; the message names the System V object in the way"
	case errors.Is(err, restore.ErrPIDInUse):
		return exitPIDInUse, "the original process (or another one) still holds that PID: stop it first, then restore, or restore a copy beside it with --namespace"
	case errors.Is(err, format.ErrChecksum), errors.Is(err, format.ErrCorrupt):
		return exitBadImage, "the image is damaged; restore from another copy"
	case errors.Is(err, format.ErrTruncated):
		return exitBadImage, "the image is incomplete (copy interrupted?); restore from another copy"
	case errors.Is(err, restore.ErrUntrusted):
		return exitBadImage, "restore it as its owner, or as root only images root wrote"
	case errors.Is(err, format.ErrBadMagic), errors.Is(err, format.ErrVersion), errors.Is(err, restore.ErrIncompatible):
		return exitBadImage, ""
	case errors.Is(err, dump.ErrOutput):
		return exitFailure, "nothing was frozen: the process was left running unchanged"
	case errors.Is(err, procinfo.ErrUnsupported):
		return exitUnsupported, "the process was left running unchanged"
	case errors.Is(err, restore.ErrMemLock):
		return exitFailure, "" // the message says which limit
	case strings.Contains(err.Error(), "operation not permitted") && strings.Contains(err.Error(), "ptrace"):
		return exitFailure, "chpox needs ptrace rights over the process (run as its owner or root)"
	}
	return exitFailure, ""
}

var errUsage = errors.New("usage error")
