// Package signalfd checkpoints signalfd(2) descriptors: the set of signals
// the descriptor reads, and its flags. A signalfd holds no signals of its
// own: read(2) takes them from the pending signals of whoever reads
// (fs/signalfd.c, signalfd_dequeue works on current), which the process
// record keeps. So one made by chpox and handed to the process reads the
// process's signals as the original did.
package signalfd

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// Link is the target of a signalfd's /proc/PID/fd link.
const Link = "anon_inode:[signalfd]"

// Describe fills f (kind, mask) from the descriptor's fdinfo, whose
// "sigmask:" line is the mask given to signalfd(2) without SIGKILL and
// SIGSTOP, in the hexadecimal form of /proc/PID/status's SigBlk (bit n-1
// is signal n; fs/signalfd.c, signalfd_show_fdinfo).
func Describe(f *format.File, fdinfo string) error {
	for _, line := range strings.Split(fdinfo, "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k != "sigmask" {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return fmt.Errorf("signalfd fdinfo %q: %w", line, err)
		}
		f.Kind, f.SigMask = format.FileSignalfd, mask
		return nil
	}
	return fmt.Errorf("signalfd fdinfo has no sigmask line")
}

// Create makes the signalfd f describes in chpox, with its mask and the
// flags signalfd4 takes (O_NONBLOCK and O_CLOEXEC are SFD_NONBLOCK and
// SFD_CLOEXEC); restore hands it to every fd of the description.
func Create(f format.File) (*os.File, error) {
	mask := unix.Sigset_t{Val: [16]uint64{f.SigMask}}
	fd, err := unix.Signalfd(-1, &mask, f.Flags&(unix.O_NONBLOCK|unix.O_CLOEXEC))
	if err != nil {
		return nil, os.NewSyscallError("signalfd", err)
	}
	return os.NewFile(uintptr(fd), Link), nil
}
