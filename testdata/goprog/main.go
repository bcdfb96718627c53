// goprog: many goroutines with tickers, a mutex-guarded map, channels, a
// tight loop that only async preemption can interrupt, and forced GCs. It
// checks the totals at the end: prints "go ok ..." or "go FAIL ...".
//
//	goprog [ROUNDS]  (default 2000 ticks of 1 ms per goroutine)
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	rounds := 2000
	if len(os.Args) > 1 {
		rounds, _ = strconv.Atoi(os.Args[1])
	}
	const workers = 40
	var (
		mu   sync.Mutex
		m    = map[int]int{}
		wg   sync.WaitGroup
		sent atomic.Int64
		spin atomic.Int64
	)
	results := make(chan int, workers)
	stop := make(chan struct{})
	// A loop with no calls: only the runtime's async preemption signal
	// (SIGURG) can stop it, so GC must still work after restore.
	go func() {
		x := 0
		for {
			for i := 0; i < 1<<20; i++ {
				x += i
			}
			spin.Add(1)
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	fmt.Println("ready")
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for i := 0; i < rounds; i++ {
				<-t.C
				mu.Lock()
				m[g]++
				mu.Unlock()
				if i%500 == 0 {
					runtime.GC()
				}
			}
			sent.Add(1)
			results <- g
		}(g)
	}
	wg.Wait()
	close(stop)
	close(results)
	seen := 0
	for range results {
		seen++
	}
	for g := 0; g < workers; g++ {
		if m[g] != rounds {
			fmt.Printf("go FAIL goroutine %d ticked %d of %d\n", g, m[g], rounds)
			os.Exit(1)
		}
	}
	if seen != workers || sent.Load() != workers || spin.Load() == 0 {
		fmt.Printf("go FAIL results %d sent %d spin %d\n", seen, sent.Load(), spin.Load())
		os.Exit(1)
	}
	fmt.Printf("go ok %d goroutines x %d ticks, GOMAXPROCS=%d\n", workers, rounds, runtime.GOMAXPROCS(0))
}
