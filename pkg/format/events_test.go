package format

import (
	"errors"
	"testing"
)

// TestValidateEvents: the version-3 event records refer only to what the
// image holds.
func TestValidateEvents(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(fs []File)
		want   error
	}{
		{"baseline", func([]File) {}, nil},
		{"pidfd of a missing process", func(fs []File) { fs[1].PidfdPID = 4242 }, ErrCorrupt},
		{"pidfd without process", func(fs []File) { fs[1].PidfdPID = 0 }, ErrCorrupt},
		{"pidfd_pid on another kind", func(fs []File) { fs[0].PidfdPID = 100 }, ErrCorrupt},
		{"reaped pidfd", func(fs []File) { fs[1].PidfdPID = -1 }, nil},
		{"pidfd below -1", func(fs []File) { fs[1].PidfdPID = -2 }, ErrCorrupt},
		{"inotify wds not increasing", func(fs []File) { fs[0].Inotify[1].WD = 2 }, ErrCorrupt},
		{"inotify wd zero", func(fs []File) { fs[0].Inotify[0].WD = 0 }, ErrCorrupt},
		{"inotify relative path", func(fs []File) { fs[0].Inotify[0].Path = "tmp" }, ErrCorrupt},
		{"inotify watches on a pidfd", func(fs []File) { fs[1].Inotify = fs[0].Inotify }, ErrCorrupt},
		{"epoll watch of a missing description", func(fs []File) { fs[2].Watches[0].Desc = 777 }, ErrCorrupt},
		{"epoll watch of a description", func(fs []File) { fs[2].Watches[0].Desc = 902 }, nil},
		{"owner outside", func(fs []File) { fs[0].Owner.PID = 4242 }, ErrCorrupt},
		{"owner type 3", func(fs []File) { fs[0].Owner.Type = 3 }, ErrCorrupt},
		{"owner signal 65", func(fs []File) { fs[0].Owner.Sig = 65 }, ErrCorrupt},
		{"owner group", func(fs []File) { fs[0].Owner.Type = 2 }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := makeSample(1, false)
			fs := []File{
				{FD: 61, Desc: 901, Kind: FileInotify, Path: "anon_inode:inotify", Owner: &FileOwner{Type: 1, PID: 100, Sig: 34},
					Inotify: []InotifyWatch{{WD: 2, Path: "/tmp", Mask: 0x100}, {WD: 4, Path: "/etc/passwd", Mask: 0x80000002}}},
				{FD: 62, Desc: 902, Kind: FilePidfd, Path: "anon_inode:[pidfd]", PidfdPID: 100},
				{FD: 63, Desc: 903, Kind: FileEpoll, Path: "anon_inode:[eventpoll]", Watches: []EpollWatch{{FD: 9, Events: 1}}},
			}
			tc.mutate(fs)
			s.procs[0].Files = append(s.procs[0].Files, fs...)
			_, err := decodeBytes(assemble(Version, s.secs()))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
}
