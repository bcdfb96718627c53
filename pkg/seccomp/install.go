package seccomp

import "fmt"

// System call numbers and constants on x86_64 (arch/x86/entry/syscalls,
// include/uapi/linux/seccomp.h, prctl.h).
const (
	sysRead, sysWrite, sysExit, sysRtSigreturn, sysExitGroup = 0, 1, 60, 15, 231
	sysPrctl, sysSeccomp                                     = 157, 317
	setModeFilter                                            = 1 // SECCOMP_SET_MODE_FILTER
	prSetSeccomp                                             = 22
	FlagTSync                                                = 1 // SECCOMP_FILTER_FLAG_TSYNC
	FlagLog                                                  = 2 // SECCOMP_FILTER_FLAG_LOG
)

// StrictAllows tells whether strict mode (SECCOMP_MODE_STRICT) lets call
// nr through: read, write, exit and rt_sigreturn only (kernel/seccomp.c,
// mode1_syscalls); any other call kills the thread.
func StrictAllows(nr uint64) bool {
	switch nr {
	case sysRead, sysWrite, sysExit, sysRtSigreturn:
		return true
	}
	return false
}

// Installer is the call that installs one more filter in a thread that
// runs the filters under (newest first): seccomp(SECCOMP_SET_MODE_FILTER,
// flags, prog) if they let it through, else prctl(PR_SET_SECCOMP,
// SECCOMP_MODE_FILTER, prog) if they let that through and no flag is
// needed (a program may have installed its filters either way). The
// returned args have the program's address as their last element, to be
// filled in.
func Installer(under [][]byte, flags uint64, ip uint64) (nr uint64, args []uint64, err error) {
	try := func(nr uint64, args ...uint64) (bool, error) {
		action, err := RunChain(under, Call(nr, ip, args...))
		return Allows(action), err
	}
	ok, err := try(sysSeccomp, setModeFilter, flags, 0)
	if err != nil {
		return 0, nil, err
	}
	if ok {
		return sysSeccomp, []uint64{setModeFilter, flags, 0}, nil
	}
	if flags == 0 {
		if ok, err = try(sysPrctl, prSetSeccomp, setModeFilter, 0); err != nil {
			return 0, nil, err
		}
		if ok {
			return sysPrctl, []uint64{prSetSeccomp, setModeFilter, 0}, nil
		}
	}
	a, _ := RunChain(under, Call(sysSeccomp, ip, setModeFilter, flags, 0))
	return 0, nil, fmt.Errorf("the filters before it answer %s to seccomp(SECCOMP_SET_MODE_FILTER, %#x) and to prctl(PR_SET_SECCOMP)", ActionName(a), flags)
}

// CommonPrefix is how many filters, oldest first, all chains share (each
// chain lists filter IDs oldest first; a thread without filters makes it 0).
func CommonPrefix(chains [][]int) int {
	if len(chains) == 0 {
		return 0
	}
	n := len(chains[0])
	for _, c := range chains[1:] {
		n = min(n, len(c))
		for i := 0; i < n; i++ {
			if c[i] != chains[0][i] {
				n = i
				break
			}
		}
	}
	return n
}
