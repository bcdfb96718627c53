package ghost

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// Make gives each kind its stand-in: at the free path, removed again, with
// the type, device, owner and mode asked for; beside it when the path is
// taken (the file there untouched).
func TestMake(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod and chown need root")
	}
	dir := t.TempDir()
	owner := &format.Ownership{UID: 1234, GID: 1235}
	for _, tc := range []struct {
		name string
		mode uint32
		rdev uint64
	}{
		{"file", unix.S_IFREG | 0o640, 0},
		{"dir", unix.S_IFDIR | 0o750, 0},
		{"fifo", unix.S_IFIFO | 0o604, 0},
		{"null", unix.S_IFCHR | 0o620, unix.Mkdev(1, 3)},
		{"setuid", unix.S_IFREG | 0o4755, 0},
	} {
		for _, taken := range []bool{false, true} {
			path := filepath.Join(dir, tc.name)
			if taken {
				if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f, err := Make(path, tc.mode, tc.rdev, owner)
			if err != nil {
				t.Fatalf("%s (taken %v): %v", tc.name, taken, err)
			}
			var st unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			want := tc.mode &^ unix.S_ISUID
			if st.Mode != want || st.Nlink != 0 || st.Rdev != tc.rdev || st.Uid != 1234 || st.Gid != 1235 {
				t.Errorf("%s (taken %v): mode %#o nlink %d rdev %#x owner %d:%d; want mode %#o, unlinked, rdev %#x, 1234:1235",
					tc.name, taken, st.Mode, st.Nlink, st.Rdev, st.Uid, st.Gid, want, tc.rdev)
			}
			link, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
			if wantName := path + " (deleted)"; !taken && link != wantName || taken && !strings.HasPrefix(link, path+".chpox-") {
				t.Errorf("%s (taken %v): the stand-in is %q", tc.name, taken, link)
			}
			if taken {
				if b, _ := os.ReadFile(path); string(b) != "keep" {
					t.Errorf("%s: the file at the path now holds %q", tc.name, b)
				}
				os.Remove(path)
			} else if _, err := os.Lstat(path); err == nil {
				t.Errorf("%s: the stand-in was left at its path", tc.name)
			}
			f.Close()
		}
	}
	m, err := Make("/memfd:name", unix.S_IFREG|0o600, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if link, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(m.Fd()))); link != "/memfd:name (deleted)" {
		t.Errorf("memfd stand-in is %q", link)
	}
	m.Close()
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}
