package filelock

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
)

func TestParse(t *testing.T) {
	info := "pos:\t0\nflags:\t0100002\nmnt_id:\t27\nino:\t9980652\n" +
		"lock:\t1: FLOCK  ADVISORY  WRITE 31209 fe:00:9980652 0 EOF\n" +
		"lock:\t2: POSIX  ADVISORY  READ 31209 fe:00:9980653 0 9\n" +
		"lock:\t3: OFDLCK ADVISORY  WRITE -1 fe:00:9980654 5 9\n" +
		"lock:\t4: LEASE  ACTIVE    READ 31209 fe:00:9980655 0 EOF\n"
	got, err := Parse(info, "/f")
	if err != nil {
		t.Fatal(err)
	}
	want := []Held{
		{format.Lock{Kind: format.LockFlock, Write: true, End: -1, PID: 31209}, true},
		{format.Lock{Kind: format.LockPOSIX, End: 9, PID: 31209}, false},
		{format.Lock{Kind: format.LockOFD, Write: true, Start: 5, End: 9}, true},
		{format.Lock{Kind: format.LockLease, End: -1, PID: 31209}, true},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Parse (-want +got):\n%s", d)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ line, word string }{
		{"lock:\t1: LEASE  BREAKING  UNLCK 5 fe:00:1 0 EOF", "being broken"},
		{"lock:\t1: LEASE  BREAKER   READ 5 fe:00:1 0 EOF", "being broken"},
		{"lock:\t1: DELEG  ACTIVE    READ 5 fe:00:1 0 EOF", "NFS delegation"},
		{"lock:\t1: POSIX  MANDATORY WRITE 5 fe:00:1 0 EOF", "MANDATORY"},
		{"lock:\t1: FLOCK  ADVISORY  UNLCK 5 fe:00:1 0 EOF", "UNLCK"},
		{"lock:\t1: LEASE  ACTIVE", ""},
	} {
		_, err := Parse(c.line+"\n", "/the/file")
		if err == nil || !strings.Contains(err.Error(), c.word) {
			t.Errorf("Parse(%q): %v, want an error naming %q", c.line, err, c.word)
		}
		if c.word != "" && (!errors.Is(err, procinfo.ErrUnsupported) || !strings.Contains(err.Error(), "/the/file")) {
			t.Errorf("Parse(%q): %v, want an unsupported error naming /the/file", c.line, err)
		}
	}
}

func TestFlockStruct(t *testing.T) {
	b := flockStruct(format.Lock{Kind: format.LockPOSIX, Write: true, Start: 20, End: 29})
	if b[0] != 1 || b[8] != 20 || b[16] != 10 { // F_WRLCK, l_start 20, l_len 10
		t.Errorf("struct flock % x", b)
	}
	b = flockStruct(format.Lock{Kind: format.LockOFD, Start: 5, End: -1})
	if b[0] != 0 || b[8] != 5 || b[16] != 0 { // F_RDLCK, to EOF: l_len 0
		t.Errorf("struct flock % x", b)
	}
}
