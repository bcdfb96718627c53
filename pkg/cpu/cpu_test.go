package cpu

import (
	"slices"
	"testing"
)

func TestFlags(t *testing.T) {
	have, err := Flags()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(have, "sse2") {
		t.Fatalf("flags %v lack sse2, which every x86_64 CPU has", have)
	}
	if m, err := Missing(have); err != nil || len(m) != 0 {
		t.Errorf("Missing(own flags) = %v, %v", m, err)
	}
	// A flag of the list this CPU lacks is reported; names that are not
	// instruction sets are not.
	var lacks string
	for f := range isa {
		if !slices.Contains(have, f) {
			lacks = f
			break
		}
	}
	m, err := Missing([]string{"sse2", lacks, "hypervisor", "no_such_flag"})
	if err != nil || !slices.Equal(m, []string{lacks}) {
		t.Errorf("Missing = %v, %v; want [%s]", m, err, lacks)
	}
}

func TestXFeatures(t *testing.T) {
	x, err := XFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if x&3 != 3 {
		t.Errorf("XSAVE features %#x lack x87 and SSE", x)
	}
	xs := make([]byte, 512)
	xs[464] = 0xe7
	if got, ok := XSaveFeatures(xs); !ok || got != 0xe7 {
		t.Errorf("XSaveFeatures = %#x, %v", got, ok)
	}
	if _, ok := XSaveFeatures(xs[:100]); ok {
		t.Error("a short area has no features")
	}
}
