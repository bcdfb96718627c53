package signalfd

import (
	"testing"

	"github.com/chpox/chpox/pkg/format"
)

// fdinfo of a PostgreSQL 15 child's latch signalfd (SIGURG), on 6.18.
func TestDescribe(t *testing.T) {
	var f format.File
	info := "pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1039\nsigmask:\t0000000000400000\n"
	if err := Describe(&f, info); err != nil {
		t.Fatal(err)
	}
	if f.Kind != format.FileSignalfd || f.SigMask != 1<<22 {
		t.Errorf("got kind %q mask %#x, want signalfd 0x400000", f.Kind, f.SigMask)
	}
	if err := Describe(&f, "pos:\t0\n"); err == nil {
		t.Error("fdinfo without sigmask accepted")
	}
	if err := Describe(&f, "sigmask:\tzz\n"); err == nil {
		t.Error("bad sigmask accepted")
	}
}
