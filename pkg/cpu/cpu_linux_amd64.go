// Package cpu tells what of the CPU a process may have come to depend on:
// the instruction-set extensions /proc/cpuinfo lists (a program, or its C
// library's ifuncs, picks code by them once, at start) and the XSAVE state
// components the kernel saves per thread. An image records both; restore
// refuses a CPU that lacks any of them, before anything is created,
// instead of a SIGILL later or a register set the kernel rejects.
package cpu

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// isa lists the /proc/cpuinfo flags that name instructions a user program
// may use. Other flags (hypervisor, constant_tsc, bug and power flags)
// differ between machines that run the same code alike.
var isa = map[string]bool{
	"sse": true, "sse2": true, "pni": true, "ssse3": true, "sse4_1": true, "sse4_2": true, "sse4a": true,
	"avx": true, "avx2": true, "fma": true, "fma4": true, "f16c": true, "xop": true,
	"avx512f": true, "avx512dq": true, "avx512cd": true, "avx512bw": true, "avx512vl": true,
	"avx512ifma": true, "avx512vbmi": true, "avx512_vbmi2": true, "avx512_vnni": true, "avx512_bitalg": true,
	"avx512_vpopcntdq": true, "avx512_bf16": true, "avx512_fp16": true, "avx512_vp2intersect": true,
	"avx_vnni": true, "avx_vnni_int8": true, "avx_ifma": true, "avx_ne_convert": true,
	"amx_tile": true, "amx_int8": true, "amx_bf16": true, "amx_fp16": true,
	"bmi1": true, "bmi2": true, "adx": true, "abm": true, "popcnt": true, "movbe": true, "lzcnt": true,
	"aes": true, "vaes": true, "pclmulqdq": true, "vpclmulqdq": true, "sha_ni": true, "gfni": true,
	"rdrand": true, "rdseed": true, "rdpid": true, "clflushopt": true, "clwb": true, "clzero": true,
	"erms": true, "fsrm": true, "movdiri": true, "movdir64b": true, "serialize": true, "waitpkg": true,
	"xsave": true, "xsaveopt": true, "xsavec": true, "xsaves": true, "cx16": true, "lahf_lm": true,
	"mmx": true, "cmov": true, "fxsr": true, "pku": true, "ospke": true, "cldemote": true,
}

// Flags returns this CPU's instruction-set flags, sorted.
func Flags() ([]string, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		var out []string
		for _, fl := range strings.Fields(v) {
			if isa[fl] {
				out = append(out, fl)
			}
		}
		slices.Sort(out)
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("/proc/cpuinfo has no flags line")
}

// Missing lists the flags of want this CPU lacks.
func Missing(want []string) ([]string, error) {
	have, err := Flags()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range want {
		if isa[f] && !slices.Contains(have, f) {
			out = append(out, f)
		}
	}
	return out, nil
}

// archGetXcompSupp is arch_prctl(ARCH_GET_XCOMP_SUPP): the XSAVE features
// the kernel supports for user space (arch/x86/include/uapi/asm/prctl.h).
const archGetXcompSupp = 0x1021

// XFeatures returns the XSAVE state components this kernel and CPU save
// for a thread (XCR0's user part).
func XFeatures() (uint64, error) {
	var m uint64
	if _, _, e := unix.Syscall(unix.SYS_ARCH_PRCTL, archGetXcompSupp, uintptr(unsafe.Pointer(&m)), 0); e != 0 {
		return 0, os.NewSyscallError("arch_prctl(ARCH_GET_XCOMP_SUPP)", e)
	}
	return m, nil
}

// XSaveFeatures reads the XCR0 an NT_X86_XSTATE regset was saved with: the
// kernel puts it in the first 8 software-reserved bytes of the FXSAVE area,
// offset 464 (arch/x86/kernel/fpu/xstate.c, copy_xstate_to_uabi_buf).
func XSaveFeatures(xs []byte) (uint64, bool) {
	if len(xs) < 472 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(xs[464:]), true
}
