package procinfo_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
)

// TestParseTimers reads /proc/PID/timers as kernel 6.18 writes it.
func TestParseTimers(t *testing.T) {
	in := `ID: 2
signal: 10/0000000000001234
notify: signal/tid.29839
ClockID: 7
ID: 1
signal: 34/0000000000000000
notify: none/pid.29839
ClockID: 1
ID: 0
signal: 32/000055d1c0a4e580
notify: thread/pid.29839
ClockID: -6
`
	got, err := procinfo.ParseTimers(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []format.PosixTimer{
		{ID: 2, Signal: 10, Sival: 0x1234, Notify: format.SigevSignal | format.SigevThreadID, TID: 29839, Clock: 7},
		{ID: 1, Signal: 34, Notify: format.SigevNone, Clock: 1},
		{ID: 0, Signal: 32, Sival: 0x55d1c0a4e580, Notify: format.SigevThread, Clock: -6},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ParseTimers (-want +got):\n%s", d)
	}
	for _, bad := range []string{"signal: 1/0\n", "ID: x\n", "ID: 1\nnotify: later/pid.1\n", "ID: 1\nsignal: 1/zz\n"} {
		if _, err := procinfo.ParseTimers(bad); err == nil {
			t.Errorf("ParseTimers(%q) took it", bad)
		}
	}
}
