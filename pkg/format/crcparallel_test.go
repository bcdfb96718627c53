package format

import (
	"math/rand"
	"testing"
)

func TestCRC32Combine(t *testing.T) {
	b := make([]byte, 100_003)
	rand.New(rand.NewSource(1)).Read(b)
	want := Checksum(0, b)
	for _, cut := range []int{0, 1, 7, 4096, 50_000, 99_999, len(b)} {
		if got := crc32Combine(Checksum(0, b[:cut]), Checksum(0, b[cut:]), len(b)-cut); got != want {
			t.Errorf("cut at %d: %#x, want %#x", cut, got, want)
		}
	}
}

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
