package restore

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

const capV3 = 0x20080522 // _LINUX_CAPABILITY_VERSION_3

// restoreCreds gives every thread (credentials are per thread) the image's
// ids and capabilities, never more than it had: the bounding set is cut
// while chpox's capabilities still allow it, then the ids change, then
// capset lowers the permitted, effective and inheritable sets, ambient
// capabilities are raised again and no_new_privs is set back.
func (x *target) restoreCreds(c format.Creds) error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	for _, t := range x.allThreads() {
		if err := t.threadCreds(c, last); err != nil {
			return fmt.Errorf("thread %d: %w", t.pid(), err)
		}
	}
	// After the ids, which reset it. PR_SET_DUMPABLE takes 0 or 1 only;
	// 2 is what the ids leave (fs.suid_dumpable) anyway.
	if c.Dumpable != nil && *c.Dumpable <= 1 {
		if _, err := x.call("prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(*c.Dumpable)); err != nil {
			return err
		}
	}
	return nil
}

func (x *target) threadCreds(c format.Creds, last int) error {
	for cap := 0; cap <= last; cap++ {
		if c.CapBnd&(1<<cap) != 0 {
			continue
		}
		if in, _ := x.call("prctl(PR_CAPBSET_READ)", unix.SYS_PRCTL, unix.PR_CAPBSET_READ, uint64(cap)); in == 1 {
			if _, err := x.call("prctl(PR_CAPBSET_DROP)", unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uint64(cap)); err != nil {
				return err
			}
		}
	}
	// Before the ids change: the bits decide what the change does to the
	// capabilities (SECBIT_KEEP_CAPS, NO_SETUID_FIXUP), and setting them
	// needs CAP_SETPCAP, which capset may take away below.
	if c.SecureBits != nil {
		have, err := x.call("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
		if err != nil {
			return err
		}
		if uint32(have) != *c.SecureBits {
			if _, err := x.call(fmt.Sprintf("prctl(PR_SET_SECUREBITS, %#x)", *c.SecureBits), unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uint64(*c.SecureBits)); err != nil {
				return fmt.Errorf("%w (setting securebits needs CAP_SETPCAP)", err)
			}
		}
	}
	if credsDiffer(c) {
		if err := x.setThreadCreds(c); err != nil {
			return err
		}
	}
	x.resetScratch()
	hdr, err := x.put(u64s(capV3)) // version, pid 0
	if err != nil {
		return err
	}
	lo := func(v uint64) uint64 { return v & 0xffffffff }
	data, err := x.put(u64s(lo(c.CapEff)|lo(c.CapPrm)<<32, lo(c.CapInh)|(c.CapEff>>32)<<32, c.CapPrm>>32|(c.CapInh>>32)<<32))
	if err != nil {
		return err
	}
	if _, err := x.call("capset", unix.SYS_CAPSET, hdr, data); err != nil {
		return fmt.Errorf("%w (the process had capabilities %#x that the restoring user cannot give)", err, c.CapPrm)
	}
	for cap := 0; cap <= last; cap++ {
		if c.CapAmb&(1<<cap) != 0 {
			if _, err := x.call("prctl(PR_CAP_AMBIENT_RAISE)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uint64(cap)); err != nil {
				return err
			}
		}
	}
	if c.NoNewPrivs {
		if _, err := x.call("prctl(PR_SET_NO_NEW_PRIVS)", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1); err != nil {
			return err
		}
	}
	return nil
}

func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read the highest capability number: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
