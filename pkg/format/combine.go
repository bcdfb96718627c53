package format

// CRC-32C of a concatenation from the CRCs of its parts (zlib's
// crc32_combine, for the reflected Castagnoli polynomial): an incremental
// checkpoint takes unchanged pages from the previous image without reading
// them, and still writes the data section's CRC over all of its bytes.

const castagnoliReversed = 0x82f63b78

// multmodp multiplies a and b modulo the polynomial (bit 31 is x^0).
func multmodp(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; ; m >>= 1 {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		if b&1 != 0 {
			b = b>>1 ^ castagnoliReversed
		} else {
			b >>= 1
		}
	}
}

// x2n[k] is x^(2^k) modulo the polynomial. zlib keeps 32 and wraps k
// around (k & 31), which holds for its CRC-32 but not for CRC-32C: with
// the wrap, every length from 512 MiB on combined wrong. 64 entries, no
// wrap: lengths up to 2^60 bytes.
var x2n = func() (t [64]uint32) {
	p := uint32(1) << 30 // x^1
	for k := range t {
		t[k] = p
		p = multmodp(p, p)
	}
	return t
}()

// ShiftOp appends n zero bytes to a CRC. Multiplying by a fixed operator
// is linear in the CRC, so it is four table lookups (a few ns; the
// bitwise product took 190 ns, too slow for a million pages).
type ShiftOp struct{ t [4][256]uint32 }

// Shift returns the operator for n bytes.
func Shift(n int64) *ShiftOp {
	p := uint32(1) << 31 // x^0
	for k := 3; n > 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = multmodp(x2n[k], p)
		}
	}
	op := &ShiftOp{}
	for i := range op.t {
		for b := range op.t[i] {
			op.t[i][b] = multmodp(p, uint32(b)<<(8*i))
		}
	}
	return op
}

func (op *ShiftOp) apply(c uint32) uint32 {
	return op.t[0][c&0xff] ^ op.t[1][c>>8&0xff] ^ op.t[2][c>>16&0xff] ^ op.t[3][c>>24]
}

// Combine returns Checksum(0, A||B) from crcA = Checksum(0, A), crcB =
// Checksum(0, B) and op = Shift(len(B)). Checksum(c, B) for any c is
// Combine(c, Checksum(0, B), op) too.
func Combine(crcA, crcB uint32, op *ShiftOp) uint32 {
	return op.apply(crcA) ^ crcB
}

// PageShift is Shift(4096).
var PageShift = Shift(dataAlign)
