package e2e

import (
	"strings"
	"testing"
)

// TestThreadState: every thread comes back with its own name
// (pthread_setname_np; the main thread's is the process's comm), its
// robust futex list and its rseq registration: each thread reports them
// as the kernel gives them back, before the dump and after the restore.
func TestThreadState(t *testing.T) {
	setup(t, "thstate")
	p := start(t, "thstate")
	keys := []string{"T 0", "T 1", "T 2"}
	before := lastLines(t, p, 0, 2, keys...)
	names := map[string]string{"T 0": "thstate-main", "T 1": "worker-one", "T 2": "worker-two"}
	for k, name := range names {
		if !strings.HasPrefix(before[k], k+" name="+name+" robust=") || strings.Contains(before[k], "robust=0/") || !strings.HasSuffix(before[k], " rseq=on") {
			t.Fatalf("the original reports %q, want name %s, a robust list and rseq on: the test would prove nothing", before[k], name)
		}
	}
	sameAfterRestore(t, p, before, keys...)
}
