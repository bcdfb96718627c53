package format

import (
	"math/rand/v2"
	"testing"
)

func TestCombine(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 4096, 4096 * 3, 100003} {
		a, b := make([]byte, r.IntN(5000)), make([]byte, n)
		for i := range a {
			a[i] = byte(r.Uint32())
		}
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		want := Checksum(Checksum(0, a), b)
		if got := Combine(Checksum(0, a), Checksum(0, b), Shift(int64(n))); got != want {
			t.Errorf("len(B) %d: Combine = %#x, want %#x", n, got, want)
		}
	}
}

// Lengths of 512 MiB and more (k = 3 + 29 bits: past 32 entries of
// x^(2^k)): a data section of 1 GiB checked in two parts combined wrong
// before. The zeros are streamed, not allocated.
func TestCombineLong(t *testing.T) {
	zeros := make([]byte, 1<<20)
	sumZeros := func(c uint32, n int64) uint32 {
		for ; n > 0; n -= int64(len(zeros)) {
			c = Checksum(c, zeros[:min(n, int64(len(zeros)))])
		}
		return c
	}
	for _, n := range []int64{1<<29 + 12345, 1 << 30} {
		a := uint32(0x5eed1234)
		if got, want := Combine(a, sumZeros(0, n), Shift(n)), sumZeros(a, n); got != want {
			t.Errorf("len(B) %d: Combine = %#x, want %#x", n, got, want)
		}
	}
}

func BenchmarkCombinePage(b *testing.B) {
	op := Shift(4096)
	c := uint32(0x12345678)
	for i := 0; i < b.N; i++ {
		c = Combine(c, uint32(i), op)
	}
	_ = c
}
