package e2e

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMMFields: what prctl(PR_SET_MM_MAP) gives back comes back as it
// was: the exe link, the command line and environment (the kernel reads
// them where arg_start/env_start point), the auxiliary vector, and the
// code, data, brk and stack addresses /proc/PID/stat shows.
func TestMMFields(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter", "1000000", "0") // a count limit and exit code it never reaches
	p.waitInt(t, countRE, 3, 10*time.Second)
	read := func(pid int) map[string]string {
		m := map[string]string{}
		for _, f := range []string{"cmdline", "environ", "auxv"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if err != nil {
				t.Fatal(err)
			}
			m[f] = string(b)
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			t.Fatal(err)
		}
		m["exe"] = exe
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The fields after the comm, from field 3 (state) on.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 49 {
			t.Fatalf("/proc/%d/stat: %q", pid, stat)
		}
		at := func(n int) string { return f[n-3] }
		m["code"] = at(26) + "-" + at(27)
		m["stack"] = at(28)
		m["data"] = at(45) + "-" + at(46)
		m["brk"] = at(47)
		m["args"] = at(48) + "-" + at(49)
		m["env"] = at(50) + "-" + at(51)
		return m
	}
	before := read(p.pid)
	if before["exe"] != progs["counter"] || !strings.Contains(before["cmdline"], "1000000\x000") || len(before["auxv"]) == 0 {
		t.Fatalf("the original's exe %q, cmdline %q, %d bytes of auxv: the test would prove nothing", before["exe"], before["cmdline"], len(before["auxv"]))
	}
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, lastInt(p.log, countRE)+3, 10*time.Second)
	after := read(r.pid)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s after restore %q\n         before %q", k, after[k], v)
		}
	}
}
