package objects

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/procinfo"
)

// ErrUnsupported marks what chpox cannot checkpoint (procinfo's, exit 6).
var ErrUnsupported = procinfo.ErrUnsupported

// PathOf finds a path to the inode that fdinfo of an inotify or fanotify
// mark shows (fs/notify/fdinfo.c: ino, sdev, fhandle-type, f_handle): its
// file handle opened on a mount of its filesystem (open_by_handle_at(2),
// needs CAP_DAC_READ_SEARCH), and the path the kernel shows for that. The
// path is checked to lead to the same inode. sdev is the kernel's s_dev
// (major<<20 | minor).
func PathOf(sdev, ino uint64, htype int32, handle []byte) (string, error) {
	if len(handle) == 0 {
		return "", fmt.Errorf("its filesystem gives no file handles, so its path cannot be found: %w", ErrUnsupported)
	}
	dev := unix.Mkdev(uint32(sdev>>20), uint32(sdev&0xfffff))
	mnt, err := MountOf(dev)
	if err != nil {
		return "", err
	}
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("open mount %s: %w", mnt, err)
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(htype, handle), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("its file handle does not open on %s (%v), so its path cannot be found: %w", mnt, err, ErrUnsupported)
	}
	defer unix.Close(fd)
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	// Lstat: the inode may be a symbolic link (watched with IN_DONT_FOLLOW);
	// restore never follows the last component either.
	if err := unix.Lstat(path, &st); err != nil || st.Ino != ino || st.Dev != dev {
		return "", fmt.Errorf("the watched inode has no path (%q: unlinked, or out of reach): %w", path, ErrUnsupported)
	}
	return path, nil
}

// MountOf returns the mount point of a mount of device dev, one that shows
// the whole filesystem (root "/") if there is one (/proc/self/mountinfo).
func MountOf(dev uint64) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	found := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[2] != want {
			continue
		}
		if f[3] == "/" {
			return unescape(f[4]), nil
		}
		if found == "" {
			found = unescape(f[4])
		}
	}
	if found == "" {
		return "", fmt.Errorf("no mount of device %s here: %w", want, ErrUnsupported)
	}
	return found, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountByID returns the mount point of the mount with mount id id
// (/proc/self/mountinfo's first field).
func MountByID(id int) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	want := strconv.Itoa(id)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && f[0] == want {
			return unescape(f[4]), nil
		}
	}
	return "", fmt.Errorf("no mount with id %d here: %w", id, ErrUnsupported)
}
