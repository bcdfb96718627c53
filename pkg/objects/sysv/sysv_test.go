package sysv

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// /proc/sysvipc as kernel 6.18 prints it (testdata/sysvipc, taken from this
// machine and edited: a removed segment, a locked one with a negative key).
func TestReadTable(t *testing.T) {
	got, err := readTable("testdata/sysvipc")
	if err != nil {
		t.Fatal(err)
	}
	want := &Table{
		Shm: []ShmEntry{
			{SysVPerm: format.SysVPerm{Key: 9979026, KID: 5, Mode: 0o600, UID: 101, GID: 104, CUID: 101, CGID: 104}, Size: 56, CPID: 310, LPID: 458, Nattch: 6},
			{SysVPerm: format.SysVPerm{KID: 33, Mode: 0o600}, Size: 8192, CPID: 3861, LPID: 3862, Nattch: 2, Removed: true},
			{SysVPerm: format.SysVPerm{Key: -12345678, KID: 34, Mode: 0o644, UID: 65534, GID: 65534}, Size: 4096, CPID: 3861, LPID: 3862, Nattch: 1, Locked: true},
		},
		Sem: []SemEntry{{SysVPerm: format.SysVPerm{Key: 1543565650, KID: 2, Mode: 0o600}, NSems: 3}},
		Msg: []MsgEntry{{SysVPerm: format.SysVPerm{Key: 1543565651, KID: 1, Mode: 0o620}, CBytes: 38, QNum: 3, LSPID: 3861}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("readTable (-want +got):\n%s", d)
	}
}

// kernelSem models one semaphore and one undo entry as ipc/sem.c's
// perform_atomic_semop_slow treats a semop: operations in order, each
// checked against the value and semadj left by the ones before; on a
// failure everything is undone.
type kernelSem struct{ val, adj int }

func (k *kernelSem) semop(ops []sembuf) error {
	val, adj := k.val, k.adj
	for _, o := range ops {
		op := int(o.op)
		if op == 0 {
			if val != 0 {
				return unix.EAGAIN // IPC_NOWAIT on every operation
			}
			continue
		}
		if val+op < 0 {
			return unix.EAGAIN
		}
		if val+op > semVMX {
			return unix.ERANGE
		}
		if o.flag&semUndo != 0 {
			if u := adj - op; u < -semVMX-1 || u > semVMX {
				return unix.ERANGE
			}
			adj -= op
		}
		val += op
	}
	k.val, k.adj = val, adj
	return nil
}

// caller runs the package's semops against a kernelSem.
func (k *kernelSem) caller(t *testing.T) Caller {
	var pending []byte
	return Caller{
		Addr:  0x1000,
		Write: func(_ uint64, b []byte) error { pending = append(pending[:0], b...); return nil },
		Call: func(nr uint64, args ...uint64) (uint64, error) {
			if nr != unix.SYS_SEMOP || int(args[2])*6 != len(pending) || args[2] > MaxOps {
				t.Fatalf("call %d %v with %d bytes of sembufs", nr, args, len(pending))
			}
			var ops []sembuf
			for i := 0; i < len(pending); i += 6 {
				ops = append(ops, sembuf{uint16(pending[i]) | uint16(pending[i+1])<<8,
					int16(uint16(pending[i+2]) | uint16(pending[i+3])<<8), int16(uint16(pending[i+4]) | uint16(pending[i+5])<<8)})
			}
			for _, o := range ops {
				if o.flag&ipcNowait == 0 {
					t.Fatalf("an operation without IPC_NOWAIT could hold the process: %+v", ops)
				}
			}
			return 0, k.semop(ops)
		},
	}
}

// The probes find every adjustment, whatever the value, and change
// nothing; Restore gives a fresh undo entry the adjustment and leaves the
// value as it was.
func TestAdjustments(t *testing.T) {
	adjs := []int{-32768, -32767, -20000, -2, -1, 0, 1, 2, 7, 16384, 32766, 32767}
	vals := []int{0, 1, 3, 1241, 16383, 32766, 32767}
	for _, v := range vals {
		for _, adj := range adjs {
			k := &kernelSem{val: v, adj: adj}
			sets := Sets{{SysVPerm: format.SysVPerm{KID: 9}, Values: []uint16{uint16(v)}}}
			got, err := sets.Adjustments(k.caller(t))
			if err != nil {
				t.Fatalf("value %d, adj %d: %v", v, adj, err)
			}
			if k.val != v || k.adj != adj {
				t.Fatalf("value %d, adj %d: the probes left value %d, adj %d", v, adj, k.val, k.adj)
			}
			var want []format.SemUndo
			if adj != 0 {
				want = []format.SemUndo{{KID: 9, Num: 0, Adj: adj}}
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("value %d, adj %d: (-want +got)\n%s", v, adj, d)
			}
			fresh := &kernelSem{val: v}
			if err := Restore(fresh.caller(t), got, func(int) []uint16 { return sets[0].Values }); err != nil {
				t.Fatalf("value %d, adj %d: restore: %v", v, adj, err)
			}
			if fresh.val != v || fresh.adj != adj {
				t.Errorf("value %d, adj %d: restore made value %d, adj %d", v, adj, fresh.val, fresh.adj)
			}
		}
	}
	// A process that may not alter the set has no adjustment there.
	denied := Caller{Addr: 1, Write: func(uint64, []byte) error { return nil },
		Call: func(uint64, ...uint64) (uint64, error) { return 0, unix.EACCES }}
	if got, err := (Sets{{Values: []uint16{1}}}).Adjustments(denied); err != nil || got != nil {
		t.Errorf("EACCES: %v, %v; want none", got, err)
	}
}

// TestSelectShm: which segments belong to a checkpoint of tree {100, 101}
// (docs/usage.md). A segment the tree does not attach but others do is
// theirs even when its creator's PID is now the tree's; named with --ipc it
// is refused, being shared with processes outside.
func TestSelectShm(t *testing.T) {
	tree := map[int]bool{100: true, 101: true}
	seg := func(kid, cpid, lpid, nattch int) ShmEntry {
		return ShmEntry{SysVPerm: format.SysVPerm{KID: kid}, CPID: cpid, LPID: lpid, Nattch: nattch}
	}
	table := &Table{Shm: []ShmEntry{
		seg(1, 100, 100, 2), // attached twice by the tree
		seg(2, 100, 7, 0),   // unattached, created by the tree
		seg(3, 7, 101, 0),   // unattached, last detached by the tree
		seg(4, 7, 7, 0),     // unattached, nobody of the tree
		seg(5, 100, 100, 6), // PIDs reused: attached by others only
		seg(6, 7, 7, 3),     // others'
	}}
	attached := map[int]int{1: 2}
	got, err := Select(table, tree, attached, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range got.Shm {
		kids = append(kids, e.KID)
	}
	if d := cmp.Diff([]int{1, 2, 3}, kids); d != "" {
		t.Errorf("selected segments (-want +got):\n%s", d)
	}
	if _, err := Select(table, tree, attached, []Ref{{"shm", 5}}); err == nil {
		t.Error("a segment attached only outside, named with --ipc, was selected; want it refused")
	}
	table.Shm[0].Nattch = 3 // one attachment outside the tree
	if _, err := Select(table, tree, attached, nil); err == nil {
		t.Error("a segment attached inside and outside the tree was selected; want it refused")
	}
}
