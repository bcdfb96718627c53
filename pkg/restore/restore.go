// Package restore brings a process back from an image.
//
// It starts a loader (this very binary, stopped under ptrace at its first
// instruction), maps a scratch page holding a "syscall; int3" stub into it,
// and injects clone3 with set_tid there to create a process with the
// original PID as a child of chpox. Everything else is injected system calls
// into that new process: unmap the loader, move the vDSO to where it was,
// map every area and write its pages, prctl(PR_SET_MM_MAP), files,
// credentials, signal state, and finally the registers. No code is copied
// into the target. Until the final detach the process is under ptrace with
// PTRACE_O_EXITKILL: a failure, or the death of chpox, kills it before it ran
// a single instruction of its own.
package restore

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/lazy"
	"github.com/chpox/chpox/pkg/objects/external"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/ptrace"
)

// Errors callers tell apart.
var (
	ErrPIDInUse     = errors.New("in use")
	ErrIncompatible = errors.New("image cannot be restored here")
)

// Options control a restore.
type Options struct {
	// PIDWait is how long to wait for an old zombie to release the PID.
	PIDWaitMS int
	// Foreground says the restore runs as a job of the terminal chpox
	// runs in: a root that led its session with a controlling terminal
	// outside the tree (the user's shell's, a tmux pane's) then joins
	// chpox's session as a process group, to have chpox's terminal as
	// its controlling terminal. Otherwise it leads a session of its own,
	// without one.
	Foreground bool
	// BeforeRun, if set, is called with the job once the tree is built
	// and just before it runs (a foreground restore hands it the terminal
	// there, before it could read and stop on SIGTTIN).
	BeforeRun func(Job)
	// Externals says what to give descriptors that were shared with
	// processes outside the checkpoint, by key (pkg/objects/external);
	// stdin, stdout and stderr get chpox's own when not named here.
	Externals map[string]external.Choice
	// Progress, if set, counts the data bytes as they are read in.
	Progress *format.Progress
	// Detach: chpox exits once the tree runs, so the root loses its
	// parent at once (see checkPdeathSig).
	Detach bool
	// Lazy: the tree runs before its private anonymous memory is all
	// written; chpox fills it on first touch and in the background
	// (pkg/lazy), Restored.Lazy. Images that cannot be (stream,
	// compressed) are restored at once, Restored.NotLazy says why.
	Lazy bool

	untrusted bool // root restores an image a user owns (checkOwner)
}

// Restored is a running restored tree: its root is a child of chpox.
type Restored struct {
	PID       int // of the root
	Processes int
	// Lazy is the copy still filling the tree's memory (Options.Lazy);
	// the caller must Wait for it before it exits. nil if none.
	Lazy *lazy.Copy
	// NotLazy says why Options.Lazy was not used ("" if it was or was
	// not asked).
	NotLazy string
}

// Restore restores the image at path and returns once the process runs.
//
// path "-" reads the image from standard input in one pass (a pipe, ssh):
// the tree is built from the metadata, the data is streamed into it and
// verified, and only then does it run. If a PID of the image is still in
// use here (a dump --kill of this machine piped into this restore: the
// originals hold their PIDs until the whole image is out), the data is
// first spooled, verified, to an unlinked file in $TMPDIR.
func Restore(tr *ptrace.Tracer, path string, opt Options) (*Restored, error) {
	img, err := openImage(path, opt)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", path, err)
	}
	defer img.Close()
	if err := check(path, img, opt); err != nil {
		return nil, fmt.Errorf("restore %s: %w", path, err)
	}
	if opt.untrusted, err = untrustedImage(path); err != nil {
		return nil, fmt.Errorf("restore %s: %w", path, err)
	}
	var l *lazyState
	why := ""
	if opt.Lazy {
		if why = notLazy(path, img); why == "" {
			data, err := mapData(path, img)
			if err != nil {
				return nil, fmt.Errorf("restore %s: %w", path, err)
			}
			l = &lazyState{data: data, skip: map[*format.VMA]bool{}}
		}
	}
	var out *Restored
	err = tr.Do(func() error {
		var err error
		out, err = restoreTree(img, opt, l)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", path, err)
	}
	if why == "" && l != nil && out.Lazy == nil && l.refused != "" {
		why = l.refused
	}
	out.NotLazy = why
	return out, nil
}

func openImage(path string, opt Options) (*format.Image, error) {
	if path != "-" {
		return format.Open(path)
	}
	img, err := format.ReadStream(os.Stdin)
	if err != nil {
		return nil, err
	}
	busy := false
	for _, p := range img.Processes {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID)); err == nil {
			busy = true
		}
	}
	if !busy {
		return img, nil
	}
	f, err := os.CreateTemp("", "chpox-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool the data section: %w", err)
	}
	os.Remove(f.Name())
	if err := img.Spool(f); err != nil {
		f.Close()
		return nil, err
	}
	// The dump kills its processes only after it sent the last byte: give
	// them the time a --kill takes (check then waits for their zombies).
	deadline := time.Now().Add(time.Duration(opt.PIDWaitMS) * time.Millisecond)
	for _, p := range img.Processes {
		for time.Now().Before(deadline) {
			state, _, err := procinfo.State(p.PID)
			if err != nil || state == "Z" {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return img, nil
}

// self is the loader binary: any program stopped at its first instruction
// serves, and this one is always there.
func self() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find loader binary: %w", err)
	}
	return exe, nil
}
