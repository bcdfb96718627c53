package netlock

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestScript(t *testing.T) {
	conns := []Conn{
		{netip.MustParseAddrPort("127.0.0.1:80"), netip.MustParseAddrPort("127.0.0.1:40000")},
		{netip.MustParseAddrPort("[::ffff:127.0.0.1]:81"), netip.MustParseAddrPort("[::ffff:127.0.0.2]:40001")},
		{netip.MustParseAddrPort("[::1]:82"), netip.MustParseAddrPort("[::1]:40002")},
	}
	want := "add element inet chpox conns4 { 127.0.0.1 . 40000 . 127.0.0.1 . 80 }\n" +
		"add element inet chpox conns4 { 127.0.0.2 . 40001 . 127.0.0.1 . 81 }\n" +
		"add element inet chpox conns6 { ::1 . 40002 . ::1 . 82 }\n"
	if got := Script("add", conns); got != want {
		t.Errorf("Script:\n%s\nwant:\n%s", got, want)
	}
}

// TestLockUnlock sets and removes a lock for real where nft and root are
// there (the e2e tests check that the lock keeps connections alive).
func TestLockUnlock(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI needs nft and root:", err)
		}
		t.Skip("needs nft and root")
	}
	c := []Conn{{netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:65001")}}
	if err := Lock(c); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("nft", "list", "set", "inet", Table, "conns4").CombinedOutput()
	if !strings.Contains(string(out), "127.0.0.1 . 65001 . 127.0.0.1 . 9") {
		t.Errorf("after Lock the set lacks the element:\n%s", out)
	}
	if err := Unlock(c); err != nil {
		t.Fatal(err)
	}
	if err := Unlock(c); err != nil {
		t.Fatal("a second Unlock:", err)
	}
	out, _ = exec.Command("nft", "list", "set", "inet", Table, "conns4").CombinedOutput()
	if strings.Contains(string(out), "65001") {
		t.Errorf("after Unlock the set still has the element:\n%s", out)
	}
}
