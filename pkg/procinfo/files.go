package procinfo

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/signalfd"
)

// FileSocket marks a socket whose family is not known yet; it is never
// written into an image.
const FileSocket = "socket"

// OpenFile is an open file descriptor, with the content of a deleted file
// (which exists nowhere but in the process) still to be copied.
type OpenFile struct {
	format.File
	// Source reads the deleted file's content; nil for other kinds.
	Source *os.File
	Size   int64
	// Dev and Ino identify the file; fds of one open file description
	// have the same, so they narrow the search for shared descriptions.
	Dev, Ino uint64
	// Rdev is the device number of a device file (a terminal ...).
	Rdev uint64
	// FDInfo is the fdinfo text of an anonymous-inode file (inotify,
	// fanotify, pidfd), which its object package reads.
	FDInfo string
	// EpollTargets are the inodes of the files Watches watch, in the same
	// order, with the toff each needs in kcmp(KCMP_EPOLL_TFD).
	EpollTargets []EpollTarget
	// Runs are the parts of a deleted file that hold data (Addr is the
	// file offset), copied in this order.
	Runs []format.DataRun
	// Unlinked: a FIFO whose path was removed.
	Unlinked bool
}

// EpollTarget is the file an epoll watch watches, as fdinfo shows it.
type EpollTarget struct {
	Dev, Ino uint64 // Dev as stat(2) gives it
	// Toff is the index among earlier watches with the same fd number
	// (a file added, dup'd elsewhere and closed, and a new one added under
	// that number): kcmp's kcmp_epoll_slot.toff.
	Toff int
}

// Files lists the open file descriptors of pid. Kinds chpox cannot restore
// yet fail with ErrUnsupported naming the descriptor.
func Files(pid int) ([]*OpenFile, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	fds, err := p.FileDescriptors()
	if err != nil {
		return nil, fmt.Errorf("pid %d: list fds: %w", pid, err)
	}
	sort.Slice(fds, func(i, j int) bool { return fds[i] < fds[j] })
	var out []*OpenFile
	for _, fd := range fds {
		f, err := file(p, int(fd))
		if errors.Is(err, fs.ErrNotExist) && !fdOpen(pid, int(fd)) {
			continue // closed since the listing (a frozen process closes none)
		}
		if err != nil {
			CloseFiles(out)
			return nil, fmt.Errorf("pid %d: fd %d: %w", pid, fd, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// onProc tells whether path is a /proc entry: a process's entries get new
// inodes with every new process (a restored one too), so they are not
// checked by inode at restore.
func onProc(path string) bool { return strings.HasPrefix(path, "/proc/") }

func fdOpen(pid, fd int) bool {
	_, err := os.Lstat(procPath(pid, "fd/"+strconv.Itoa(fd)))
	return err == nil
}

// IsTerminal tells whether f is a terminal: a pseudo-terminal's slave
// (/dev/pts/N, majors 136-143), a virtual console or serial line (major
// 4), /dev/tty or /dev/console (5:0, 5:1). Documentation/admin-guide/devices.txt.
func (f *OpenFile) IsTerminal() bool {
	if f.Kind != format.FileChar {
		return false
	}
	major, minor := unix.Major(f.Rdev), unix.Minor(f.Rdev)
	return major >= 136 && major <= 143 || major == 4 || major == 5 && minor <= 1
}

// CloseFiles releases the content sources.
func CloseFiles(fs []*OpenFile) {
	for _, f := range fs {
		if f.Source != nil {
			f.Source.Close()
		}
	}
}

func file(p procfs.Proc, fd int) (*OpenFile, error) {
	link := procPath(p.PID, "fd/"+strconv.Itoa(fd))
	target, err := os.Readlink(link)
	if err != nil {
		return nil, err
	}
	info, err := p.FDInfo(strconv.Itoa(fd))
	if err != nil {
		return nil, fmt.Errorf("read fdinfo: %w", err)
	}
	flags, err := strconv.ParseInt(info.Flags, 8, 64)
	if err != nil {
		return nil, fmt.Errorf("fdinfo flags %q: %w", info.Flags, err)
	}
	pos, err := strconv.ParseInt(info.Pos, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("fdinfo pos %q: %w", info.Pos, err)
	}
	if strings.HasPrefix(target, "anon_inode:") {
		return anonFile(p.PID, fd, target, int(flags))
	}
	var st unix.Stat_t
	if err := unix.Stat(link, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", target, err)
	}
	f := &OpenFile{File: format.File{FD: fd, Path: target, Flags: int(flags), Pos: pos, Mode: st.Mode}, Dev: st.Dev, Ino: st.Ino, Rdev: st.Rdev}
	gone := st.Nlink == 0
	if gone {
		f.Path = strings.TrimSuffix(target, " (deleted)")
		f.OwnerIDs = &format.Ownership{UID: st.Uid, GID: st.Gid}
	}
	if flags&unix.O_PATH != 0 {
		// Whatever it names (a symlink held with O_NOFOLLOW, a FIFO, a
		// socket file): an O_PATH descriptor only names it.
		if gone {
			return nil, fmt.Errorf("O_PATH descriptor of %s, which was deleted: a stand-in cannot be the same file: %w", target, ErrUnsupported)
		}
		f.Kind = format.FilePath
		if !onProc(f.Path) {
			f.File.Dev, f.Inode = st.Dev, st.Ino
		}
		return f, nil
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		f.Kind = format.FileRegular
		if target == "/secretmem (deleted)" && isSecretmem(link) {
			return nil, fmt.Errorf("%s is memfd_secret memory, which no other process (chpox neither) can read: %w", target, ErrUnsupported)
		}
		if strings.HasPrefix(target, "/memfd:") && gone {
			// Its content and seals are saved with the memory object
			// (pkg/objects/memfd), shared with the areas mapping it.
			f.Kind, f.Path, f.OwnerIDs = format.FileMemfd, target, nil
			return f, nil
		}
		if gone {
			return deleted(f, link, st.Size)
		}
	case unix.S_IFDIR:
		f.Kind = format.FileDir
	case unix.S_IFCHR:
		f.Kind = format.FileChar
	case unix.S_IFBLK:
		f.Kind = format.FileBlock
	case unix.S_IFSOCK:
		f.Kind = FileSocket // its family decides its kind (pkg/dump)
		f.Path, f.OwnerIDs = target, nil
	case unix.S_IFIFO:
		f.Kind = format.FilePipe
		f.Pos = 0
		f.Unlinked = gone // the pipe record keeps what a stand-in needs (pkg/dump)
	default:
		return nil, fmt.Errorf("%s (mode %#o): %w", target, st.Mode, ErrUnsupported)
	}
	switch f.Kind {
	case format.FileRegular, format.FileDir, format.FileChar, format.FileBlock:
		// Reopened by path: restore makes sure the path still names it
		// (or, deleted, makes a stand-in).
		f.Deleted = gone
		if !onProc(f.Path) {
			f.File.Dev, f.Inode = st.Dev, st.Ino
		}
		if f.Kind == format.FileChar || f.Kind == format.FileBlock {
			f.File.Rdev = st.Rdev
		}
		if !gone {
			f.OwnerIDs = nil
		}
	}
	return f, nil
}

// secretmemMagic is SECRETMEM_MAGIC (include/uapi/linux/magic.h).
const secretmemMagic = 0x5345434d

// isSecretmem tells a memfd_secret(2) file, which /proc shows as the
// regular file "/secretmem (deleted)" with one link.
func isSecretmem(link string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(link, &fs) == nil && fs.Type == secretmemMagic
}

func deleted(f *OpenFile, link string, size int64) (*OpenFile, error) {
	src, err := os.Open(link) // the magic link reopens the unlinked inode
	if err != nil {
		return nil, fmt.Errorf("open deleted file %s: %w", f.Path, err)
	}
	runs, err := dataRuns(int(src.Fd()), size)
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("deleted file %s: %w", f.Path, err)
	}
	f.Kind = format.FileDeleted
	f.Source, f.Size, f.Runs = src, size, runs
	// Dev and Inode tell the descriptions of one deleted file (opened
	// twice, or again through /proc/self/fd): restore gives them one
	// stand-in, and the data is saved once.
	f.File.Size, f.File.Dev, f.Inode = size, f.Dev, f.Ino
	return f, nil
}

// dataRuns lists the parts of a file that hold data (SEEK_DATA, SEEK_HOLE):
// only they are copied, so a sparse file stays sparse and costs the image
// what it stores. A filesystem without hole support reports one run.
func dataRuns(fd int, size int64) ([]format.DataRun, error) {
	var runs []format.DataRun
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole up to the end
		}
		if err != nil {
			return nil, os.NewSyscallError("lseek(SEEK_DATA)", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, os.NewSyscallError("lseek(SEEK_HOLE)", err)
		}
		if hole <= data {
			return nil, fmt.Errorf("data at %d ends at %d: the file changed while being read", data, hole)
		}
		hole = min(hole, size)
		if hole > data {
			runs = append(runs, format.DataRun{Addr: uint64(data), Len: uint64(hole - data)})
		}
		off = hole
	}
	if len(runs) > maxRuns {
		// Too fragmented for the record (sections are capped): one run
		// over it all, its holes saved as zeros, correct but not sparse.
		last := runs[len(runs)-1]
		runs = []format.DataRun{{Addr: runs[0].Addr, Len: last.Addr + last.Len - runs[0].Addr}}
	}
	return runs, nil
}

// maxRuns bounds a deleted file's data runs: 64Ki runs are about 4 MiB of
// the process record, whose section may hold 64 MiB.
const maxRuns = 1 << 16

// DeletedExe returns the executable of pid with its content to copy if
// it was deleted (a program upgraded under a running process), else nil.
func DeletedExe(pid int) (*OpenFile, error) {
	link := procPath(pid, "exe")
	var st unix.Stat_t
	if err := unix.Stat(link, &st); err != nil || st.Nlink != 0 {
		return nil, nil // a kernel thread, or an executable that is there
	}
	target, err := os.Readlink(link)
	if err != nil {
		return nil, err
	}
	f := &OpenFile{File: format.File{Path: strings.TrimSuffix(target, " (deleted)"), Mode: st.Mode,
		OwnerIDs: &format.Ownership{UID: st.Uid, GID: st.Gid}}, Dev: st.Dev, Ino: st.Ino}
	return deleted(f, link, st.Size)
}

// CopyContent writes the deleted file's data runs to w, in order.
func (f *OpenFile) CopyContent(w io.Writer) error {
	for _, r := range f.Runs {
		n, err := io.Copy(w, io.NewSectionReader(f.Source, int64(r.Addr), int64(r.Len)))
		if err == nil && n != int64(r.Len) {
			err = fmt.Errorf("file shrank below %d bytes while being copied", r.Addr+uint64(n))
		}
		if err != nil {
			return fmt.Errorf("copy deleted file %s: %w", f.Path, err)
		}
	}
	return nil
}

// anonFile handles the anonymous-inode files chpox can rebuild: eventfd
// (its counter), epoll (its watch list), signalfd (its mask) and
// timerfd, read from fdinfo.
func anonFile(pid, fd int, target string, flags int) (*OpenFile, error) {
	f := &OpenFile{File: format.File{FD: fd, Path: target, Flags: flags}}
	var st unix.Stat_t
	if err := unix.Stat(procPath(pid, "fd/"+strconv.Itoa(fd)), &st); err == nil {
		f.Dev, f.Ino = st.Dev, st.Ino
	}
	info, err := os.ReadFile(procPath(pid, "fdinfo/"+strconv.Itoa(fd)))
	if err != nil {
		return nil, fmt.Errorf("read fdinfo: %w", err)
	}
	switch target {
	case "anon_inode:[eventfd]":
		f.Kind = format.FileEventfd
		for _, line := range strings.Split(string(info), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "eventfd-count":
				f.Count, err = strconv.ParseUint(v, 16, 64)
			case "eventfd-semaphore":
				f.Semaphore = v == "1"
			}
			if err != nil {
				return nil, fmt.Errorf("fdinfo %q: %w", line, err)
			}
		}
	case "anon_inode:[timerfd]":
		// Its state is read by pkg/objects/timerfd, from a copy of the fd.
		f.Kind = format.FileTimerfd
	case "anon_inode:[eventpoll]":
		f.Kind = format.FileEpoll
		if f.Watches, f.EpollTargets, err = parseEpoll(string(info)); err != nil {
			return nil, err
		}
	case "anon_inode:inotify":
		f.Kind, f.FDInfo = format.FileInotify, string(info)
	case "anon_inode:[pidfd]":
		f.Kind, f.FDInfo = format.FilePidfd, string(info)
	case "anon_inode:[fanotify]":
		f.Kind, f.FDInfo = format.FileFanotify, string(info)
	case signalfd.Link:
		if err := signalfd.Describe(&f.File, string(info)); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: %w", target, ErrUnsupported)
	}
	return f, nil
}

// parseEpoll reads the "tfd: N events: HEX data: HEX ..." lines of an
// epoll fd's fdinfo (fs/eventpoll.c, ep_show_fdinfo).
func parseEpoll(info string) ([]format.EpollWatch, []EpollTarget, error) {
	var out []format.EpollWatch
	var targets []EpollTarget
	for _, line := range strings.Split(info, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != "tfd:" || f[2] != "events:" || f[4] != "data:" {
			continue
		}
		fd, err1 := strconv.Atoi(f[1])
		ev, err2 := strconv.ParseUint(f[3], 16, 32)
		data, err3 := strconv.ParseUint(f[5], 16, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, nil, fmt.Errorf("epoll fdinfo line %q: bad number", line)
		}
		t := EpollTarget{}
		for _, kv := range f[6:] {
			k, v, _ := strings.Cut(kv, ":")
			n, err := strconv.ParseUint(v, 16, 64)
			switch {
			case k != "ino" && k != "sdev":
			case err != nil:
				return nil, nil, fmt.Errorf("epoll fdinfo line %q: bad %s", line, k)
			case k == "ino":
				t.Ino = n
			default: // the kernel's s_dev: major<<20 | minor
				t.Dev = unix.Mkdev(uint32(n>>20), uint32(n&0xfffff))
			}
		}
		for _, w := range out {
			if w.FD == fd {
				t.Toff++
			}
		}
		out = append(out, format.EpollWatch{FD: fd, Events: uint32(ev), Data: data})
		targets = append(targets, t)
	}
	return out, targets, nil
}
