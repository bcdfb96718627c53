package format

import (
	"errors"
	"testing"
)

// The seed image with an embedded file is accepted as written; each broken
// reference or bound is refused as corrupt.
func TestValidateEmbedded(t *testing.T) {
	seed := seedImages(t)["seed-embedded"]
	good, err := decodeBytes(seed)
	if err != nil {
		t.Fatalf("seed-embedded: %v", err)
	}
	if e := good.Objects.Embedded; len(e) != 1 || len(e[0].Content) != 1 || good.Processes[0].VMAs[0].File.Embedded != 1 {
		t.Fatalf("seed-embedded decoded as %+v", e)
	}
	for _, tc := range []struct {
		name   string
		mutate func(o *Objects, p *Process)
	}{
		{"vma names missing file", func(_ *Objects, p *Process) { p.VMAs[0].File.Embedded = 2 }},
		{"id zero", func(o *Objects, _ *Process) { o.Embedded[0].ID = 0 }},
		{"id twice", func(o *Objects, _ *Process) { o.Embedded = append(o.Embedded, o.Embedded[0]) }},
		{"no path", func(o *Objects, _ *Process) { o.Embedded[0].Path = "" }},
		{"negative size", func(o *Objects, _ *Process) { o.Embedded[0].Size = -1 }},
		{"mode with type bits", func(o *Objects, _ *Process) { o.Embedded[0].Mode = 0o100755 }},
		{"run beyond size", func(o *Objects, _ *Process) { o.Embedded[0].Size = 5 }},
		{"run beyond data", func(o *Objects, _ *Process) { o.Embedded[0].Content[0].Off = 4096 + 1 }},
		{"run over pages", func(o *Objects, _ *Process) { o.Embedded[0].Content[0].Off = 4000 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := decodeBytes(seed)
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(&img.Objects, img.Processes[0])
			if err := img.validate(); !errors.Is(err, ErrCorrupt) {
				t.Errorf("validate: %v, want %v", err, ErrCorrupt)
			}
		})
	}
}
