package restore

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/cpu"
	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/ptrace"
)

// checkVDSO refuses a kernel whose vDSO is not the one the image's
// processes ran with: glibc and others keep pointers into its code, which
// would then point into something else.
func checkVDSO(img *format.Image) error {
	want := img.Header.VDSO
	if want == "" {
		return nil
	}
	have, err := ptrace.VdsoIdentity(os.Getpid())
	if err != nil {
		return fmt.Errorf("read this kernel's vDSO: %w", err)
	}
	if have != want {
		return fmt.Errorf("the image's processes ran with another vDSO (kernel %s) than this kernel's (%s): their pointers into it would reach other code; restore on a machine running kernel %s: %w",
			img.Header.Kernel, kernelRelease(), img.Header.Kernel, ErrIncompatible)
	}
	return nil
}

func kernelRelease() string {
	var u unix.Utsname
	unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}

// checkCPU refuses a CPU that lacks what the image's processes may use:
// an instruction-set extension of the dumping CPU (glibc and many programs
// pick their code by them at start: a SIGILL later), or an XSAVE state
// component of a thread (the kernel would refuse its registers).
func checkCPU(img *format.Image) error {
	missing, err := cpu.Missing(img.Header.CPUFlags)
	if err != nil {
		return fmt.Errorf("read this CPU's features: %w", err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("the image was made on a CPU with %s, which this one lacks (the programs may have chosen code that uses them): %w",
			strings.Join(missing, " "), ErrIncompatible)
	}
	have, err := cpu.XFeatures()
	if err != nil {
		return err
	}
	for _, p := range img.Processes {
		for _, t := range p.Threads {
			if want, ok := cpu.XSaveFeatures(t.XSave); ok && want&^have != 0 {
				return fmt.Errorf("thread %d was saved with XSAVE features %#x, this CPU saves %#x (missing %#x): %w",
					t.TID, want, have, want&^have, ErrIncompatible)
			}
		}
	}
	return nil
}
