// Package seccomp reads seccomp filter programs: it runs a process's
// classic BPF filters on a system call, as the kernel would
// (kernel/seccomp.c, seccomp_run_filters), so that chpox can tell before
// injecting a call into a sandboxed thread whether the sandbox lets it
// through, and it finds filters that hand calls to a user-space listener.
// It makes no system calls.
package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Return actions (include/uapi/linux/seccomp.h).
const (
	RetKillProcess = 0x80000000
	RetKillThread  = 0x00000000
	RetTrap        = 0x00030000
	RetErrno       = 0x00050000
	RetUserNotif   = 0x7fc00000
	RetTrace       = 0x7ff00000
	RetLog         = 0x7ffc0000
	RetAllow       = 0x7fff0000

	retActionFull = 0xffff0000
	auditArchX86  = 0xc000003e // AUDIT_ARCH_X86_64
	dataSize      = 64         // sizeof(struct seccomp_data)
	insnSize      = 8          // sizeof(struct sock_filter)
)

// Data is struct seccomp_data: what a filter sees of one system call.
type Data struct {
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// Call is the seccomp_data of system call nr with args made at ip on x86_64.
func Call(nr uint64, ip uint64, args ...uint64) Data {
	d := Data{Nr: int32(nr), Arch: auditArchX86, IP: ip}
	copy(d.Args[:], args)
	return d
}

func (d Data) bytes() []byte {
	b := make([]byte, dataSize)
	le := binary.LittleEndian
	le.PutUint32(b, uint32(d.Nr))
	le.PutUint32(b[4:], d.Arch)
	le.PutUint64(b[8:], d.IP)
	for i, a := range d.Args {
		le.PutUint64(b[16+8*i:], a)
	}
	return b
}

// ErrBadProgram reports a filter the kernel would not have accepted.
var ErrBadProgram = errors.New("bad seccomp filter program")

type insn struct {
	code   uint16
	jt, jf uint8
	k      uint32
}

func decode(prog []byte) ([]insn, error) {
	if len(prog) == 0 || len(prog)%insnSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadProgram, len(prog))
	}
	le := binary.LittleEndian
	out := make([]insn, len(prog)/insnSize)
	for i := range out {
		b := prog[i*insnSize:]
		out[i] = insn{le.Uint16(b), b[2], b[3], le.Uint32(b[4:])}
	}
	return out, nil
}

// Classic BPF opcode fields (include/uapi/linux/bpf_common.h).
const (
	clsLD, clsLDX, clsST, clsSTX, clsALU, clsJMP, clsRET, clsMISC = 0, 1, 2, 3, 4, 5, 6, 7
)

// Run runs one filter on d and returns its action, as the kernel's
// interpreter would for the subset seccomp accepts (seccomp_check_filter).
func Run(prog []byte, d Data) (uint32, error) {
	ins, err := decode(prog)
	if err != nil {
		return 0, err
	}
	data := d.bytes()
	var a, x uint32
	var mem [16]uint32
	bad := func(pc int) (uint32, error) {
		return 0, fmt.Errorf("%w: instruction %d", ErrBadProgram, pc)
	}
	for pc := 0; pc < len(ins); pc++ {
		in := ins[pc]
		switch in.code & 7 {
		case clsLD, clsLDX:
			var v uint32
			switch {
			case in.code&0xf8 == 0x20: // BPF_W|BPF_ABS
				if in.k%4 != 0 || in.k >= dataSize {
					return bad(pc)
				}
				v = binary.LittleEndian.Uint32(data[in.k:])
			case in.code&0xf8 == 0x80: // BPF_W|BPF_LEN
				v = dataSize
			case in.code&0xe0 == 0x00: // BPF_IMM
				v = in.k
			case in.code&0xe0 == 0x60: // BPF_MEM
				if in.k >= 16 {
					return bad(pc)
				}
				v = mem[in.k]
			default:
				return bad(pc)
			}
			if in.code&7 == clsLD {
				a = v
			} else {
				x = v
			}
		case clsST, clsSTX:
			if in.k >= 16 {
				return bad(pc)
			}
			if in.code&7 == clsST {
				mem[in.k] = a
			} else {
				mem[in.k] = x
			}
		case clsALU:
			src := in.k
			if in.code&8 != 0 {
				src = x
			}
			switch in.code & 0xf0 {
			case 0x00:
				a += src
			case 0x10:
				a -= src
			case 0x20:
				a *= src
			case 0x30:
				if src == 0 {
					return 0, nil // the kernel's interpreter returns 0 (kill)
				}
				a /= src
			case 0x40:
				a |= src
			case 0x50:
				a &= src
			case 0x60:
				a <<= src & 31
			case 0x70:
				a >>= src & 31
			case 0x80:
				a = -a
			case 0x90:
				if src == 0 {
					return 0, nil
				}
				a %= src
			case 0xa0:
				a ^= src
			default:
				return bad(pc)
			}
		case clsJMP:
			src := in.k
			if in.code&8 != 0 {
				src = x
			}
			var cond bool
			switch in.code & 0xf0 {
			case 0x00: // BPF_JA
				pc += int(in.k)
				if pc+1 >= len(ins) {
					return bad(len(ins) - 1)
				}
				continue
			case 0x10:
				cond = a == src
			case 0x20:
				cond = a > src
			case 0x30:
				cond = a >= src
			case 0x40:
				cond = a&src != 0
			default:
				return bad(pc)
			}
			if cond {
				pc += int(in.jt)
			} else {
				pc += int(in.jf)
			}
			if pc+1 >= len(ins) {
				return bad(pc)
			}
		case clsRET:
			switch in.code & 0x18 {
			case 0x00: // BPF_K
				return in.k, nil
			case 0x10: // BPF_A
				return a, nil
			}
			return bad(pc)
		case clsMISC:
			if in.code&0xf8 == 0x80 { // BPF_TXA
				a = x
			} else {
				x = a // BPF_TAX
			}
		}
	}
	return 0, fmt.Errorf("%w: runs past its end", ErrBadProgram)
}

// RunChain runs every filter of a thread (newest first, as the kernel
// walks them) and returns the action that wins: the lowest, taken as a
// signed number, so that KILL_PROCESS beats everything and ALLOW nothing.
func RunChain(progs [][]byte, d Data) (uint32, error) {
	ret := uint32(RetAllow)
	for _, p := range progs {
		r, err := Run(p, d)
		if err != nil {
			return 0, err
		}
		if int32(r&retActionFull) < int32(ret&retActionFull) {
			ret = r
		}
	}
	return ret, nil
}

// Allows tells whether an action lets the call run (RET_LOG logs it, too).
func Allows(action uint32) bool {
	a := action & retActionFull
	return a == RetAllow || a == RetLog
}

// ActionName names an action for messages.
func ActionName(action uint32) string {
	switch action & retActionFull {
	case RetKillProcess:
		return "KILL_PROCESS"
	case RetKillThread:
		return "KILL_THREAD"
	case RetTrap:
		return "TRAP"
	case RetErrno:
		return fmt.Sprintf("ERRNO(%d)", action&0xffff)
	case RetUserNotif:
		return "USER_NOTIF"
	case RetTrace:
		return "TRACE"
	case RetLog:
		return "LOG"
	case RetAllow:
		return "ALLOW"
	}
	return fmt.Sprintf("%#x", action)
}

// NeedsListener tells whether a filter may hand a call to a user-space
// listener (SECCOMP_RET_USER_NOTIF), or computes its action at run time
// (BPF_RET|BPF_A), so that it might.
func NeedsListener(prog []byte) (bool, error) {
	ins, err := decode(prog)
	if err != nil {
		return false, err
	}
	for _, in := range ins {
		if in.code&7 != clsRET {
			continue
		}
		if in.code&0x18 != 0 || in.k&retActionFull == RetUserNotif {
			return true, nil
		}
	}
	return false, nil
}
