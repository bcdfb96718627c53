package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/chpox/chpox/pkg/dump"
)

// liveCheckpoint is checkpoint with the memory copied while the job runs
// (pkg/dump/live.go): the tree is frozen once to start the copy (write
// tracking, kept from the last checkpoint when there is one) and once at
// the end, for its state and the pages written since the last round. The
// pages not written since the last image come from it (s.series).
func (s *Supervisor) liveCheckpoint(out string) (*dump.Result, error) {
	s.inLive = true
	defer func() { s.inLive, s.gone = false, nil }()
	start := time.Now()
	ms, err := s.freeze()
	if err != nil {
		s.ended(dump.Release(ms))
		return nil, err
	}
	series := s.series
	s.series = nil
	lv, err := dump.StartLive(ms, series)
	first := time.Since(start)
	if rerr := dump.Release(ms); rerr != nil {
		if lv != nil {
			lv.Close()
		}
		return nil, errors.Join(err, fmt.Errorf("resume: %w", rerr))
	}
	if errors.Is(err, dump.ErrNoLive) {
		slog.Info("live copy not possible, copying memory frozen", "why", err)
		return s.frozenCheckpoint(out, false)
	}
	if err != nil {
		return nil, err
	}
	// The job's events are served while the rounds run: a thread stopped
	// at a fork or a signal must not wait for the copy.
	lv.Precopy(func() bool { s.collectQueued(); return s.rootStatus != nil })
	res, w, err := s.finalFreeze(lv, out)
	if err != nil {
		lv.Close()
		return nil, err
	}
	res.Frozen = max(res.Frozen, first)
	res.Rounds = lv.Rounds()
	res.Reused, res.Shared = w.Reused, w.Shared
	if s.series, err = lv.Keep(w); err != nil {
		slog.Info("the next checkpoint will be a full one", "why", err)
	}
	for _, pid := range s.gone {
		s.series.Forget(pid)
	}
	s.series.Compact()
	return res, statSize(res, out)
}

// finalFreeze freezes the tree again, writes its image from the live copy
// and commits it once the tree runs again.
func (s *Supervisor) finalFreeze(lv *dump.Live, out string) (*dump.Result, *dump.ImageWriter, error) {
	began := time.Now()
	ms, err := s.freeze()
	frozenAt := time.Now()
	slog.Debug("final freeze: frozen", "took", frozenAt.Sub(began))
	res := &dump.Result{PID: s.root, Processes: len(ms)}
	released := false
	release := func() error {
		released = true
		err := dump.Release(ms)
		res.Frozen = time.Since(frozenAt)
		return err
	}
	defer func() {
		if !released {
			s.ended(release())
		}
	}()
	if err != nil {
		return nil, nil, err
	}
	if err := dump.Collect(ms, int(s.opt.Signal)); err != nil {
		return nil, nil, err
	}
	slog.Debug("final freeze: state collected", "since", time.Since(frozenAt))
	w, err := lv.Write(ms, out, dump.WriteOptions{EmbedFiles: s.opt.EmbedFiles, Serve: s.serving}, release)
	if err != nil {
		return nil, nil, err
	}
	if !released {
		if err := release(); err != nil {
			w.Abort()
			return nil, nil, err
		}
	}
	res.DataBytes, res.OutsideTCP = int64(w.DataBytes), w.OutsideTCP
	if err := s.serving(w.Commit); err != nil {
		return nil, nil, err
	}
	slog.Debug("image committed", "since", time.Since(frozenAt), "reused", w.Reused, "shared", w.Shared)
	return res, w, nil
}

// serving runs work (writing and syncing an image, seconds at gigabytes)
// on another goroutine while this, the tracing thread, serves the job's
// events every few milliseconds: a thread stopped at a signal or a fork
// must not wait for the disk. work calls no ptrace.
func (s *Supervisor) serving(work func() error) error {
	done := make(chan error, 1)
	go func() { done <- dump.Background(work) }()
	tick := time.NewTicker(servePoll)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			s.collectQueued()
		}
	}
}

// servePoll bounds how long a job's event waits during an image write.
const servePoll = 2 * time.Millisecond
