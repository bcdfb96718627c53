package format

import (
	"runtime"
	"sync"
)

// ChecksumParallel is Checksum(0, p) computed on all CPUs: p is cut into
// one part per CPU, each part's CRC computed on its own goroutine, and the
// CRCs combined (Combine). A lazy restore checks the data section so
// before anything runs; one CPU does ~2 GB/s here.
func ChecksumParallel(p []byte) uint32 {
	n := runtime.GOMAXPROCS(0)
	const minPart = 16 << 20
	if n < 2 || len(p) < 2*minPart {
		return Checksum(0, p)
	}
	part := (len(p) + n - 1) / n
	crcs := make([]uint32, n)
	lens := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		lo, hi := min(i*part, len(p)), min((i+1)*part, len(p))
		lens[i] = hi - lo
		wg.Add(1)
		go func() {
			defer wg.Done()
			crcs[i] = Checksum(0, p[lo:hi])
		}()
	}
	wg.Wait()
	crc := crcs[0]
	for i := 1; i < n; i++ {
		crc = Combine(crc, crcs[i], Shift(int64(lens[i])))
	}
	return crc
}
