package vmadump

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chpox/chpox/pkg/format"
)

// TestDetails turns VmFlags (as fs/proc/task_mmu.c prints them) into the
// image's memory details, and refuses device, hugetlb and uprobes areas by
// name while the vDSO areas (VM_IO|VM_PFNMAP too) pass untouched.
func TestDetails(t *testing.T) {
	yes, no := true, false
	cases := []struct {
		name   string
		area   format.VMA
		flags  string
		want   format.VMA
		refuse string
	}{
		{"advice", format.VMA{Kind: format.VMAAnon}, "rd wr mr mw me dc ac wf dd hg mg",
			format.VMA{Kind: format.VMAAnon, Advice: []string{"dontfork", "dontdump", "wipeonfork", "hugepage", "mergeable"}}, ""},
		{"locked on fault, sealed", format.VMA{Kind: format.VMAAnon}, "rd wr mr mw me lo lf ac nh sl",
			format.VMA{Kind: format.VMAAnon, Advice: []string{"nohugepage"}, Lock: format.LockOnFault, Sealed: true}, ""},
		{"locked", format.VMA{Kind: format.VMAAnon}, "rd wr mr mw me lo ac",
			format.VMA{Kind: format.VMAAnon, Lock: format.LockLocked}, ""},
		{"shared file read-only for good", format.VMA{Kind: format.VMAFile, Shared: true}, "rd mr me ms",
			format.VMA{Kind: format.VMAFile, Shared: true, MayWrite: &no}, ""},
		{"shared file may write", format.VMA{Kind: format.VMAFile, Shared: true}, "rd mr mw me ms",
			format.VMA{Kind: format.VMAFile, Shared: true, MayWrite: &yes}, ""},
		{"vvar", format.VMA{Kind: format.VMAVDSO, Name: "[vvar]"}, "rd mr pf io de dd",
			format.VMA{Kind: format.VMAVDSO, Name: "[vvar]"}, ""},
		{"device", format.VMA{Kind: format.VMAFile, Shared: true, Name: "/dev/fb0"}, "rd wr sh mr mw me ms io pf de dd", format.VMA{}, "/dev/fb0 is a device mapping"},
		{"mixed pfn", format.VMA{Kind: format.VMAFile, Name: "/dev/dri/card0"}, "rd wr mr mw me pf", format.VMA{}, "/dev/dri/card0 is a device mapping"},
		{"hugetlb", format.VMA{Kind: format.VMAAnon}, "rd wr mr mw me de ht", format.VMA{}, "anonymous memory is hugetlb memory"},
		{"uprobes", format.VMA{Kind: format.VMAAnon, Name: "[uprobes]"}, "rd ex mr me dc", format.VMA{}, "[uprobes]"},
		{"no reserve", format.VMA{Kind: format.VMAAnon}, "rd wr mr mw me nr", format.VMA{Kind: format.VMAAnon, NoReserve: true}, ""},
		{"shadow stack", format.VMA{Kind: format.VMAAnon}, "rd mr mw me ac ss", format.VMA{}, "shadow stack"},
		{"perf ring", format.VMA{Kind: format.VMAFile, Shared: true, Name: "anon_inode:[perf_event]"}, "rd wr sh mr mw me ms de dd", format.VMA{}, "anon_inode:[perf_event] is the mapping of a kernel object"},
	}
	a := &Area{VMA: format.VMA{Kind: format.VMAAnon}}
	if err := details(a, smapsEntry{pkey: 3}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "protection key 3") {
		t.Errorf("protection key 3: err %v, want a refusal naming it", err)
	}
	for _, c := range cases {
		a := &Area{VMA: c.area}
		err := details(a, smapsEntry{flags: strings.Fields(c.flags)})
		if c.refuse != "" {
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.refuse) {
				t.Errorf("%s: err %v, want a refusal naming %q", c.name, err, c.refuse)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if d := cmp.Diff(c.want, a.VMA); d != "" {
			t.Errorf("%s: (-want +got):\n%s", c.name, d)
		}
	}
}

func TestWithoutSpans(t *testing.T) {
	const p = 4096
	runs := []format.DataRun{{Addr: 0, Len: 10 * p}, {Addr: 20 * p, Len: 2 * p}, {Addr: 30 * p, Len: p}}
	spans := []format.Span{{Start: 2 * p, End: 4 * p}, {Start: 9 * p, End: 21 * p}, {Start: 30 * p, End: 31 * p}}
	want := []format.DataRun{{Addr: 0, Len: 2 * p}, {Addr: 4 * p, Len: 5 * p}, {Addr: 21 * p, Len: p}}
	if d := cmp.Diff(want, withoutSpans(runs, spans)); d != "" {
		t.Errorf("withoutSpans (-want +got):\n%s", d)
	}
	if d := cmp.Diff(runs, withoutSpans(runs, nil)); d != "" {
		t.Errorf("withoutSpans with no spans (-want +got):\n%s", d)
	}
}
