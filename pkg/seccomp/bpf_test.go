package seccomp

import (
	"encoding/binary"
	"testing"
)

func prog(ins ...insn) []byte {
	var b []byte
	for _, in := range ins {
		b = binary.LittleEndian.AppendUint16(b, in.code)
		b = append(b, in.jt, in.jf)
		b = binary.LittleEndian.AppendUint32(b, in.k)
	}
	return b
}

// denyGetppid: what testdata/seccomp.c installs, as libseccomp would.
var denyGetppid = prog(
	insn{0x20, 0, 0, 4},              // ld [arch]
	insn{0x15, 1, 0, auditArchX86},   // jeq x86_64, +1
	insn{0x06, 0, 0, RetKillProcess}, // ret kill
	insn{0x20, 0, 0, 0},              // ld [nr]
	insn{0x15, 0, 1, 110},            // jeq getppid
	insn{0x06, 0, 0, RetErrno | 1},   // ret errno(EPERM)
	insn{0x06, 0, 0, RetAllow},       // ret allow
)

func TestRun(t *testing.T) {
	for _, c := range []struct {
		d    Data
		want uint32
	}{
		{Call(110, 0), RetErrno | 1},
		{Call(39, 0), RetAllow},
		{Data{Nr: 110, Arch: 0x40000003}, RetKillProcess},
	} {
		if got, err := Run(denyGetppid, c.d); err != nil || got != c.want {
			t.Errorf("%+v: %#x, %v; want %#x", c.d, got, err, c.want)
		}
	}
	kill39 := prog(insn{0x20, 0, 0, 0}, insn{0x15, 0, 1, 39}, insn{0x06, 0, 0, RetKillThread}, insn{0x06, 0, 0, RetAllow})
	if got, _ := RunChain([][]byte{denyGetppid, kill39}, Call(39, 0)); got != RetKillThread {
		t.Errorf("chain: %#x, want kill", got)
	}
	if got, _ := RunChain([][]byte{denyGetppid, kill39}, Call(110, 0)); got != RetErrno|1 {
		t.Errorf("chain: %#x, want errno", got)
	}
	if n, _ := NeedsListener(denyGetppid); n {
		t.Error("no listener needed")
	}
	if n, _ := NeedsListener(prog(insn{0x06, 0, 0, RetUserNotif})); !n {
		t.Error("listener needed")
	}
	if _, err := Run(prog(insn{0x15, 5, 5, 0}, insn{0x06, 0, 0, 0}), Data{}); err == nil {
		t.Error("jump past the end accepted")
	}
}

func TestInstaller(t *testing.T) {
	noSeccomp := prog(insn{0x20, 0, 0, 0}, insn{0x15, 0, 1, sysSeccomp}, insn{0x06, 0, 0, RetErrno | 1}, insn{0x06, 0, 0, RetAllow})
	if nr, _, err := Installer(nil, FlagLog, 0); err != nil || nr != sysSeccomp {
		t.Errorf("no filters: %d, %v", nr, err)
	}
	if nr, args, err := Installer([][]byte{noSeccomp}, 0, 0); err != nil || nr != sysPrctl || args[0] != prSetSeccomp {
		t.Errorf("seccomp(2) blocked: %d %v, %v; want prctl", nr, args, err)
	}
	if _, _, err := Installer([][]byte{noSeccomp}, FlagTSync, 0); err == nil {
		t.Error("TSYNC through prctl accepted")
	}
	for _, c := range []struct {
		chains [][]int
		want   int
	}{
		{[][]int{{1, 2}, {1, 2}}, 2},
		{[][]int{{1, 2}, {1, 3}}, 1},
		{[][]int{{1, 2}, {1}}, 1},
		{[][]int{{1}, {}}, 0},
		{[][]int{{4, 5}}, 2},
	} {
		if got := CommonPrefix(c.chains); got != c.want {
			t.Errorf("CommonPrefix(%v) = %d, want %d", c.chains, got, c.want)
		}
	}
}
