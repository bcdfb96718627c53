package format

import (
	"math/rand"
	"testing"
)

func TestChecksumParallel(t *testing.T) {
	b := make([]byte, 64<<20+12345)
	rand.New(rand.NewSource(2)).Read(b)
	want := Checksum(0, b)
	if got := ChecksumParallel(b); got != want {
		t.Errorf("ChecksumParallel = %#x, want %#x", got, want)
	}
	b[len(b)/2] ^= 1
	if got := ChecksumParallel(b); got == want || got != Checksum(0, b) {
		t.Errorf("after a flipped bit: %#x (before %#x, sequential %#x)", got, want, Checksum(0, b))
	}
}
