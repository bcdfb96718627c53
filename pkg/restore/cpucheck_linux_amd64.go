package restore

import (
	"fmt"
	"strings"

	"github.com/chpox/chpox/pkg/cpu"
	"github.com/chpox/chpox/pkg/format"
)

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
