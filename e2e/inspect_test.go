package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// checkInspectJSON checks the documented fields of inspect --json. The
// header fields may sit at the top level or in a "header" object; the
// processes may be a count in the header and an array at the top level.
func checkInspectJSON(t *testing.T, out string, pid int, comm string) {
	t.Helper()
	var top map[string]any
	if err := json.Unmarshal([]byte(out), &top); err != nil {
		t.Fatalf("inspect --json is not a JSON object: %v\n%.2000s", err, out)
	}
	header := top
	if h, ok := top["header"].(map[string]any); ok {
		header = h
	}
	for _, k := range []string{"arch", "kernel", "created", "processes"} {
		if _, ok := header[k]; !ok {
			t.Errorf("inspect --json has no header field %q", k)
		}
	}
	if a, _ := header["arch"].(string); a != "amd64" && a != "x86_64" {
		t.Errorf("arch is %v, want amd64 or x86_64", header["arch"])
	}
	list, ok := top["processes"].([]any)
	if !ok {
		t.Fatalf("inspect --json has no processes array; keys: %v", keys(top))
	}
	if len(list) != 1 {
		t.Fatalf("inspect --json lists %d processes, want 1", len(list))
	}
	proc, ok := list[0].(map[string]any)
	if !ok {
		t.Fatalf("processes[0] is %T, want an object", list[0])
	}
	if got, _ := proc["pid"].(float64); int(got) != pid {
		t.Errorf("processes[0].pid = %v, want %d", proc["pid"], pid)
	}
	if got, _ := proc["comm"].(string); got != comm {
		t.Errorf("processes[0].comm = %v, want %s", proc["comm"], comm)
	}
	// threads, vmas, files: an array or a count.
	for k, min := range map[string]int{"threads": 1, "vmas": 5, "files": 3} {
		n := -1
		switch v := proc[k].(type) {
		case []any:
			n = len(v)
		case float64:
			n = int(v)
		}
		if n < min {
			t.Errorf("processes[0].%s = %.200v, want at least %d", k, proc[k], min)
		}
	}
	if k, ok := proc["threads"].([]any); ok && len(k) != 1 {
		t.Errorf("processes[0].threads has %d entries, want 1", len(k))
	}
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestVersion: --version names the build, and every image records the
// chpox that wrote it.
func TestVersion(t *testing.T) {
	setup(t, "counter")
	v := strings.TrimSpace(mustChpox(t, "--version").stdout)
	if !strings.HasPrefix(v, "chpox ") {
		t.Fatalf("--version printed %q", v)
	}
	p := start(t, "counter")
	p.waitInt(t, countRE, 3, 10*time.Second)
	var top struct {
		Header struct {
			Tool string `json:"tool"`
		} `json:"header"`
	}
	if err := json.Unmarshal([]byte(quietChpox(t, "inspect", "--json", dump(t, p))), &top); err != nil {
		t.Fatal(err)
	}
	if top.Header.Tool != v {
		t.Errorf("the image says it was written by %q, --version says %q", top.Header.Tool, v)
	}
}

// TestInspectTwo: inspect of two checkpoints of one process says what
// changed between them (pages that differ, a file's offset), and that
// nothing did between an image and itself.
func TestInspectTwo(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	a := dump(t, p)
	n := lastInt(p.log, countRE)
	p.waitInt(t, countRE, n+10, 10*time.Second)
	b := dump(t, p)
	out := mustChpox(t, "inspect", a, b).stdout
	pages := regexp.MustCompile(`(\d+) of (\d+) saved pages differ`).FindStringSubmatch(out)
	if pages == nil || pages[1] == "0" {
		t.Errorf("inspect of two checkpoints printed no changed pages:\n%s", out)
	}
	if !regexp.MustCompile(`fd 1 \S+: offset \d+ -> \d+`).MatchString(out) {
		t.Errorf("inspect of two checkpoints does not show stdout's offset moving:\n%s", out)
	}
	same := mustChpox(t, "inspect", a, a).stdout
	if !strings.Contains(same, fmt.Sprintf("process %d counter: unchanged", p.pid)) || strings.Contains(same, "differ") {
		t.Errorf("inspect of an image and itself:\n%s", same)
	}
}
