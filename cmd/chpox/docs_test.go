package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestManPageCurrent: docs/chpox.1 is what `chpox man` prints; change the
// command line and `make man` writes it again.
func TestManPageCurrent(t *testing.T) {
	want, err := manPage(newApp())
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("../../docs/chpox.1")
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != want {
		t.Error("docs/chpox.1 is out of date with the command line: run make man")
	}
	for _, cmd := range []string{".SH run", ".SH dump", ".SH restore", ".SH inspect", ".SH check"} {
		if !strings.Contains(want, cmd) {
			t.Errorf("the man page has no %q", cmd)
		}
	}
}

// complete asks the app what may follow args, as the completion scripts do.
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	argv := append(append([]string{"chpox"}, args...), "--generate-bash-completion")
	// urfave/cli completes flags from os.Args itself.
	saved := os.Args
	os.Args = argv
	defer func() { os.Args = saved }()
	if err := app.Run(flagsFirst(argv, app.Commands)); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return strings.Fields(out.String())
}

func TestCompletion(t *testing.T) {
	if got := complete(t); !contains(got, "dump") || !contains(got, "restore") || contains(got, "man") {
		t.Errorf("commands: %v, want dump and restore, not the hidden man", got)
	}
	if got := complete(t, "dump", "--k"); !contains(got, "--kill") {
		t.Errorf("dump flags: %v, want --kill", got)
	}
	if got := complete(t, "dump", "1234", "--k"); !contains(got, "--kill") {
		t.Errorf("dump flags after the PID: %v, want --kill", got)
	}
}

// TestBashCompletionScript runs the script in a real bash against a chpox
// built from this package.
func TestBashCompletionScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir() + "/chpox"
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	script := `source /dev/stdin; COMP_WORDS=("$1" res); COMP_CWORD=1; _chpox_complete; echo "${COMPREPLY[@]}"`
	cmd := exec.Command(bash, "-c", script, "bash", bin)
	cmd.Stdin = strings.NewReader(bashCompletion)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "restore" {
		t.Errorf("bash completion of 'chpox res': %q, %v; want restore", out, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
