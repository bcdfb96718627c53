// Package netlock keeps the packets of checkpointed TCP connections away
// from a closed port between `chpox dump --kill` and `chpox restore`: a
// packet that meets no socket is answered with a reset, which ends the
// peer's connection. It drops them with nftables rules in a table of its
// own, `inet chpox`, holding one set element per connection, through the
// nft(8) binary (Debian package nftables).
//
// It must not touch any other table, nor remove elements it was not asked
// to: several checkpoints may hold locks at once, and each restore removes
// only the connections of its own image.
package netlock

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Table is the nftables table chpox owns.
const Table = "chpox"

// Conn is one TCP connection as seen from the checkpointed side.
type Conn struct{ Local, Peer netip.AddrPort }

// ErrNoNft reports that the packet filter cannot be set.
var ErrNoNft = errors.New("the network lock needs nft(8) (Debian package nftables) and CAP_NET_ADMIN")

// The table: packets coming to a locked connection are dropped before
// conntrack sees them (priority -300, "raw"); a reset chpox's side might
// still send is dropped too. Elements are peer . peer port . local .
// local port, so the input rule reads saddr . sport . daddr . dport.
const tableDef = `table inet chpox {
	set conns4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }
	set conns6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }
	chain input {
		type filter hook input priority -300; policy accept;
		ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop
		ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop
	}
	chain output {
		type filter hook output priority -300; policy accept;
		tcp flags & rst != 0 ip daddr . tcp dport . ip saddr . tcp sport @conns4 drop
		tcp flags & rst != 0 ip6 daddr . tcp dport . ip6 saddr . tcp sport @conns6 drop
	}
}
`

// element is the set and the element of c.
func element(c Conn) (set, elem string) {
	l, p := c.Local.Addr().Unmap(), c.Peer.Addr().Unmap()
	set = "conns4"
	if p.Is6() {
		set = "conns6"
	}
	return set, fmt.Sprintf("%s . %d . %s . %d", p, c.Peer.Port(), l, c.Local.Port())
}

// Script is the nft input that adds (or deletes) conns.
func Script(op string, conns []Conn) string {
	var b strings.Builder
	for _, c := range conns {
		set, elem := element(c)
		fmt.Fprintf(&b, "%s element inet %s %s { %s }\n", op, Table, set, elem)
	}
	return b.String()
}

// Lock drops the packets of conns from now on. The table is created if it
// is missing (one transaction with the elements).
func Lock(conns []Conn) error {
	if len(conns) == 0 {
		return nil
	}
	script := Script("add", conns)
	if err := nft("list", "table", "inet", Table); err != nil {
		script = tableDef + script
	}
	if err := nftScript(script); err != nil {
		return fmt.Errorf("lock %d TCP connections: %w", len(conns), err)
	}
	return nil
}

// Unlock lets the packets of conns through again. Connections that hold no
// lock (an image dumped without --kill, or unlocked before) are skipped;
// without nft there is nothing to remove.
func Unlock(conns []Conn) error {
	if len(conns) == 0 {
		return nil
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil
	}
	if nft("list", "table", "inet", Table) != nil {
		return nil
	}
	if nftScript(Script("delete", conns)) == nil {
		return nil
	}
	// One of them was not locked, which fails the whole transaction
	// (nft 1.0.6 has no "destroy"): one by one, ignoring those.
	var errs []error
	for _, c := range conns {
		if err := nftScript(Script("delete", []Conn{c})); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unlock TCP connections: %w", err)
	}
	return nil
}

func nft(args ...string) error {
	out, err := exec.Command("nft", args...).CombinedOutput()
	if err != nil {
		return nftError(err, out)
	}
	return nil
}

func nftScript(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nftError(err, out)
	}
	return nil
}

func nftError(err error, out []byte) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return fmt.Errorf("%w: %v", ErrNoNft, err)
	}
	return fmt.Errorf("nft: %v: %s", err, bytes.TrimSpace(out))
}
