package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type checkItem struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Cost   string `json:"cost"`
}

// checkReport runs chpox check --json, as root or through setpriv as
// another user, and returns its items by name.
func checkReport(t *testing.T, asUser bool) map[string]checkItem {
	t.Helper()
	args := []string{"check", "--json"}
	var r chpoxResult
	if asUser {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatal("setpriv (util-linux) is needed:", err)
		}
		if err := os.Chmod(workDir, 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(setpriv, append([]string{"--reuid=1000", "--regid=1000", "--clear-groups", chpoxBin}, args...)...).Output()
		r = chpoxResult{stdout: string(out), code: exitCode(err)}
	} else {
		r = runChpox(t, args...)
	}
	if r.code != 0 {
		t.Fatalf("chpox check (as user: %v): exit %d\n%s", asUser, r.code, r.stderr)
	}
	var rep struct {
		UID   int         `json:"uid"`
		Items []checkItem `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("chpox check --json: %v\n%s", err, r.stdout)
	}
	items := map[string]checkItem{}
	for _, it := range rep.Items {
		items[it.Name] = it
		if !it.OK && it.Cost == "" {
			t.Errorf("%s is missing but says nothing of what that costs", it.Name)
		}
	}
	return items
}

func missing(items map[string]checkItem) []string {
	var out []string
	for name, it := range items {
		if !it.OK {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// TestCheck: on this kind of machine root has everything chpox checks
// (design notes: kernel 6.18, CAP_CHECKPOINT_RESTORE, userfaultfd
// write-protect, PAGEMAP_SCAN, TCP repair, user namespaces, the
// three-mapping vDSO); an ordinary user lacks exactly the privileges, and
// is told what each costs.
func TestCheck(t *testing.T) {
	setup(t)
	root := checkReport(t, false)
	if m := missing(root); len(m) != 0 {
		t.Errorf("as root, missing %v", m)
	}
	for _, name := range []string{"ptrace", "cap_checkpoint_restore", "clone3_set_tid", "pidfd_getfd", "xsave",
		"vdso", "userfaultfd_wp_async", "pagemap_scan", "tcp_repair", "nft", "user_namespaces"} {
		if _, ok := root[name]; !ok {
			t.Errorf("chpox check does not report %s", name)
		}
	}
	if d := root["vdso"].Detail; !strings.Contains(d, "[vvar_vclock]") || !strings.Contains(d, "padding") {
		t.Errorf("vdso: %q, want the layout and the padding", d)
	}
	if d := root["xsave"].Detail; !strings.Contains(d, "x87 SSE AVX") {
		t.Errorf("xsave: %q, want the features", d)
	}
	user := checkReport(t, true)
	want := []string{"cap_checkpoint_restore", "clone3_set_tid", "nft", "tcp_repair"}
	if diff := cmp.Diff(want, missing(user)); diff != "" {
		t.Errorf("as uid 1000, missing (-want +got):\n%s", diff)
	}
	text := mustChpox(t, "check").stdout
	if !strings.Contains(text, "ok") || !strings.Contains(text, "user_namespaces") {
		t.Errorf("chpox check printed:\n%s", text)
	}
	if r := runChpox(t, "check", "extra"); r.code != 2 {
		t.Errorf("chpox check extra: exit %d, want 2 (usage)", r.code)
	}
}
