package format

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// ---------------------------------------------------------------------------
// Test fixtures: hand-built images.

// dataBuilder lays out a data section and remembers what every run holds.
type dataBuilder struct {
	rng  *rand.Rand
	buf  []byte
	want map[DataRun][]byte
}

func newDataBuilder(seed uint64) *dataBuilder {
	return &dataBuilder{rng: rand.New(rand.NewPCG(seed, 0x5eed)), want: map[DataRun][]byte{}}
}

// add appends n random bytes destined for addr and returns their run.
func (d *dataBuilder) add(addr, n uint64) DataRun {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(d.rng.Uint32())
	}
	r := DataRun{Addr: addr, Off: uint64(len(d.buf)), Len: n}
	d.buf = append(d.buf, b...)
	d.want[r] = b
	return r
}

func (d *dataBuilder) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(d.rng.Uint32())
	}
	return b
}

func sampleHeader(nproc int, dataBytes int) *Header {
	return &Header{
		Arch:      "amd64",
		Kernel:    "6.8.0-test",
		Created:   time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC),
		Processes: nproc,
		Tool:      "chpox test",
		PageSize:  4096,
		Hostname:  "testhost",
		DataBytes: int64(dataBytes),
	}
}

// sampleProcess builds a process with every kind of VMA and file; its page
// and file contents are appended to d.
func sampleProcess(pid int, d *dataBuilder, small, objects bool) *Process {
	siginfo := d.bytes(siginfoSize)
	var exeRun DataRun // before the other runs: tests move the last ones
	if !small {
		exeRun = d.add(0, 9000)
	}
	p := &Process{
		PID: pid, PPID: 1, PGID: pid, SID: pid,
		Comm:    "counter",
		Exe:     "/usr/bin/counter",
		Cmdline: []string{"counter", "--every", "1s"},
		Cwd:     "/tmp",
		Root:    "/",
		Creds: Creds{
			UID:    [4]uint32{1000, 1000, 1000, 1000},
			GID:    [4]uint32{100, 100, 100, 100},
			Groups: []uint32{100, 27},
		},
		Umask:       0o22,
		Personality: 0,
		Rlimits: []Rlimit{
			{Resource: 7, Cur: 1024, Max: 4096},
			{Resource: 3, Cur: 8 << 20, Max: math.MaxUint64},
		},
		MM: MM{
			StartCode: 0x400000, EndCode: 0x401000, StartData: 0x402000, EndData: 0x403000,
			StartBrk: 0x500000, Brk: 0x505000, StartStack: 0x7ffc00001f00,
			ArgStart: 0x7ffc00001f10, ArgEnd: 0x7ffc00001f30, EnvStart: 0x7ffc00001f30, EnvEnd: 0x7ffc00001ff0,
		},
		Auxv:          d.bytes(64),
		Sigactions:    []Sigaction{{Signal: 10, Handler: 0x401234, Flags: 0x04000000, Restorer: 0x401300, Mask: 1 << 9}},
		SharedPending: [][]byte{siginfo},
		Threads: []Thread{{
			TID:         pid,
			Regs:        Regs{R15: 15, Rax: 0xffffffffffffffda, Rip: 0x401100, Rsp: 0x7ffc00001e00, Cs: 0x33, Ss: 0x2b, Eflags: 0x246, OrigRax: 35, FsBase: 0x7f0000000740},
			XSave:       d.bytes(832),
			SigMask:     1 << 13,
			Pending:     [][]byte{d.bytes(siginfoSize)},
			AltStack:    AltStack{SP: 0x7f0000100000, Flags: 0, Size: 8192},
			Rseq:        &Rseq{Addr: 0x7f0000000a00, Len: 32, Flags: 0, Sig: 0x53053053},
			Attrs:       &ThreadAttrs{Policy: SchedOther, Nice: 7, Affinity: []uint64{3}, IOPrio: 2<<13 | 4, TimerSlack: 50000, PdeathSig: 28},
			SeccompMode: SeccompModeFilter, SeccompFilter: 1,
		}},
		Attrs: &ProcessAttrs{OOMScoreAdj: 345, ChildSubreaper: true, THPDisable: 1, Membarrier: ptrTo(uint32(16)), LoginUID: ptrTo(uint32(1234)), SessionID: ptrTo(uint32(9))},
		Seccomp: []SeccompFilter{
			{ID: 1, Flags: 2, Prog: []byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}}, // ret ALLOW
			{ID: 2, Parent: 1, Prog: []byte{6, 0, 0, 0, 1, 0, 5, 0}},      // ret ERRNO(1)
		},
	}
	if !small {
		p.Threads = append(p.Threads, Thread{
			TID:         pid + 1,
			Regs:        Regs{Rip: 0x401200, Rsp: 0x7f00000ff000, Rdi: 7},
			XSave:       d.bytes(2688),
			AltStack:    AltStack{Flags: 2}, // SS_DISABLE
			Attrs:       &ThreadAttrs{Policy: SchedFIFO, Priority: 5, Flags: 1, Affinity: []uint64{2}},
			SeccompMode: SeccompModeFilter, SeccompFilter: 2,
		})
	}
	exe := &FileRef{Path: "/usr/bin/counter", Dev: 0x803, Inode: 1234, Size: 16384, MtimeNS: 1700000000123456789}
	p.VMAs = []VMA{
		{Start: 0x400000, End: 0x402000, Prot: ProtRead | ProtExec, Kind: VMAFile, Name: exe.Path, File: exe},
		{Start: 0x402000, End: 0x404000, Prot: ProtRead | ProtWrite, Kind: VMAFile, Name: exe.Path, File: exe, Offset: 0x2000,
			Pages: []DataRun{d.add(0x403000, 0x1000)}},
		{Start: 0x500000, End: 0x505000, Prot: ProtRead | ProtWrite, Kind: VMAAnon, Name: "[heap]",
			Pages: []DataRun{d.add(0x500000, 0x2000), d.add(0x504000, 0x1000)},
			// memory details (version 3)
			Advice: []string{AdviceDontFork, AdviceHugePage}, Lock: LockOnFault, Guards: []Span{{0x502000, 0x503000}}},
	}
	p.Memory = &MemoryState{LockFuture: LockLocked, MergeAny: true}
	if !small {
		p.VMAs = append(p.VMAs,
			// contents in Objects.Shm[0]
			VMA{Start: 0x7f0000000000, End: 0x7f0000003000, Prot: ProtRead | ProtWrite, Shared: true, Kind: VMASharedAnon, Name: "/dev/zero (deleted)", Shm: 1},
			VMA{Start: 0x7ffc00000000, End: 0x7ffc00002000, Prot: ProtRead | ProtWrite, GrowsDown: true, Kind: VMAAnon, Name: "[stack]",
				Pages: []DataRun{d.add(0x7ffc00001000, 0x1000)}},
			VMA{Start: 0x7ffd00000000, End: 0x7ffd00002000, Prot: ProtRead | ProtExec, Kind: VMAVDSO, Name: "[vdso]"},
		)
	}
	p.Files = []File{
		// fd 0 of every process shares one description (inherited)
		{FD: 0, Desc: 1, Kind: FileChar, Path: "/dev/null", Flags: 0o100000},
		{FD: 1, Desc: 100*pid + 1, Kind: FileRegular, Path: "/tmp/out.log", Flags: 0o102001, Pos: 4711, Mode: 0o100644,
			Locks: []Lock{{Kind: LockFlock, Write: true, End: -1, PID: pid}, {Kind: LockPOSIX, Start: 20, End: -1, PID: pid},
				{Kind: LockOFD, Write: true, Start: 5, End: 9}, {Kind: LockLease, End: -1, PID: pid, LeaseSignal: 12}}},
		{FD: 4, Desc: 100*pid + 4, Kind: FileDeleted, Path: "/tmp/scratch (deleted)", Flags: 0o2000002, Pos: 150, Mode: 0o100600,
			// runs of file contents need not be page-sized; the second is
			// after a hole.
			Content: []DataRun{d.add(0, 100), d.add(8192, 50)}, Size: 16384, OwnerIDs: &Ownership{UID: 1000, GID: 100}},
	}
	if !small {
		p.Files = append(p.Files, File{FD: 3, Desc: 100*pid + 3, Kind: FileDir, Path: "/tmp", Flags: 0o2200000, Dev: 2049, Inode: 12})
		p.ITimers = []ITimer{{Which: ITimerReal, ValueNS: 1e8, IntervalNS: 1e8}, {Which: ITimerProf, ValueNS: 4e10}}
		p.PosixTimers = []PosixTimer{
			{ID: 3, Clock: ClockRealtime, Notify: SigevSignal, Signal: 34, Sival: 0xabc, ValueNS: 2e9, AbsNS: 1.7e18},
			{ID: 0, Clock: ClockMonotonic, Notify: SigevSignal | SigevThreadID, Signal: 35, TID: pid + 1, ValueNS: 1e8, IntervalNS: 2e8, Overrun: 2},
			{ID: 7, Clock: ClockBoottime, Notify: SigevNone},
		}
	}
	if objects {
		p.Files = append(p.Files,
			File{FD: 6, Desc: 100*pid + 6, Kind: FilePipe, Path: "pipe:[4242]", Flags: 0o1, Pipe: 1},
			File{FD: 7, Desc: 100*pid + 7, Kind: FilePipe, Path: "/tmp/fifo", Flags: 0o4000, Pipe: 2})
	}
	if !small {
		p.Files = append(p.Files,
			// version 3: a removed directory, a removed device node, an O_PATH symlink
			File{FD: 10, Desc: 100*pid + 10, Kind: FileDir, Path: "/tmp/gone", Flags: 0o2200000, Mode: 0o40750, Deleted: true, OwnerIDs: &Ownership{}},
			File{FD: 11, Desc: 100*pid + 11, Kind: FileChar, Path: "/tmp/null", Flags: 0o1, Mode: 0o20600, Deleted: true, Rdev: 0x103},
			File{FD: 12, Desc: 100*pid + 12, Kind: FilePath, Path: "/tmp/link", Flags: 0o12400000, Mode: 0o120777, Dev: 2049, Inode: 13})
		p.CwdDeleted, p.CwdMode, p.CwdOwner = true, 0o755, &Ownership{UID: 3}
		p.Exe += " (deleted)"
		p.ExeFile = &File{Kind: FileDeleted, Path: "/usr/bin/app", Mode: 0o100755, Size: 9000, Content: []DataRun{exeRun}}
		// the timerfd last: the timer cases take the last file
		p.Files = append(p.Files, File{FD: 9, Desc: 100*pid + 9, Kind: FileTimerfd, Path: "anon_inode:[timerfd]", Flags: 0o2004002,
			Timerfd: &Timerfd{Clock: ClockRealtime, Flags: TFDTimerAbstime | TFDTimerCancelOnSet, ValueNS: 5e8, IntervalNS: 1e9, AbsNS: 1.7e18, Ticks: 3}})
	}
	return p
}

// sampleObjects builds the shared objects the sample processes refer to.
func sampleObjects(d *dataBuilder) *Objects {
	return &Objects{
		Shm: []SharedMem{
			// a run need not end on a page boundary: memfd sizes are arbitrary
			{ID: 1, Inode: 77, Size: 0x2c00, Pages: []DataRun{d.add(0, 0x1000), d.add(0x2000, 0xc00)}},
		},
		Pipes: []Pipe{
			{ID: 1, Inode: 4242, Capacity: 65536, Data: []DataRun{d.add(0, 300)}},
			{ID: 2, Inode: 4343, Capacity: 4096, FIFO: "/tmp/fifo", Deleted: true, Mode: 0o640, Owner: &Ownership{UID: 5, GID: 6}},
		},
		InetSockets: []InetSocket{
			{ID: 1, Inode: 501, Family: 2, Type: 1, Protocol: 6, State: InetEstablished, Outside: true,
				Local: netip.MustParseAddrPort("127.0.0.1:80"), Peer: netip.MustParseAddrPort("127.0.0.1:40000"),
				Options: InetOptions{ReuseAddr: true, NoDelay: true, KeepAlive: true, KeepIdle: 15},
				Repair: &TCPRepair{SendSeq: 1000, RecvSeq: 5000, SendQueue: []DataRun{d.add(0, 200)}, Unsent: 50,
					RecvQueue: []DataRun{d.add(0, 100)}, MSS: 65483, Wscale: true, SndWscale: 7, RcvWscale: 7,
					SACK: true, Timestamps: true, Timestamp: 123456, Window: TCPWindow{SndWnd: 65535, MaxWindow: 65535}}},
			{ID: 2, Inode: 502, Family: 10, Type: 2, Protocol: 17, State: InetBound, Local: netip.MustParseAddrPort("[::1]:53"),
				Datagrams: []Datagram{{From: netip.MustParseAddrPort("[::1]:999"), Data: []DataRun{d.add(0, 30)}}}},
			{ID: 3, Inode: 503, Family: 10, Type: 1, Protocol: 6, State: InetListen, Backlog: 128, Local: netip.MustParseAddrPort("[::]:8080")},
		},
	}
}

type sample struct {
	h     *Header
	objs  *Objects // nil: no objects section
	procs []*Process
	data  []byte
	runs  map[DataRun][]byte
}

// sampleOpts shape a sample image: small leaves out the second thread, the
// larger VMAs (shared memory among them) and the directory fd; objects adds
// pipes and shared memory; zombie adds a zombie child of the first process.
type sampleOpts struct {
	nproc                  int
	small, objects, zombie bool
}

// makeSample builds an image with nproc processes; all but the small ones
// have objects.
func makeSample(nproc int, small bool) sample {
	return buildSample(sampleOpts{nproc: nproc, small: small, objects: !small})
}

func buildSample(o sampleOpts) sample {
	if !o.small && !o.objects {
		panic("the shared memory VMA needs objects")
	}
	d := newDataBuilder(uint64(o.nproc))
	s := sample{}
	if o.objects {
		s.objs = sampleObjects(d)
	}
	for i := 0; i < o.nproc; i++ {
		p := sampleProcess(100+10*i, d, o.small, o.objects)
		if i > 0 {
			p.PPID = 100 // a tree: the first process is the root
		}
		s.procs = append(s.procs, p)
	}
	if o.zombie {
		s.procs = append(s.procs, &Process{PID: 999, PPID: 100, PGID: 100, SID: 100, Comm: "defunct", Zombie: true, WaitStatus: 0x0100})
	}
	s.h, s.data, s.runs = sampleHeader(len(s.procs), len(d.buf)), d.buf, d.want
	return s
}

func (s sample) secs() []sec { return stdSecs(s.h, s.objs, s.procs, s.data) }

// writeImage writes an image through the Writer, feeding the data section in
// chunks of the given size.
func writeImage(path string, h *Header, objs *Objects, procs []*Process, data []byte, chunk int) error {
	w, err := Create(path)
	if err != nil {
		return err
	}
	defer w.Abort()
	if err := w.WriteHeader(h); err != nil {
		return err
	}
	if objs != nil {
		if err := w.WriteObjects(objs); err != nil {
			return err
		}
	}
	for _, p := range procs {
		if err := w.WriteProcess(p); err != nil {
			return err
		}
	}
	if err := w.BeginData(uint64(len(data))); err != nil {
		return err
	}
	if w.DataOffset()%dataAlign != 0 {
		return fmt.Errorf("DataOffset %d not page-aligned", w.DataOffset())
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return w.Commit()
}

func (s sample) write(t testing.TB, path string) []byte {
	t.Helper()
	if err := writeImage(path, s.h, s.objs, s.procs, s.data, 1000); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---------------------------------------------------------------------------
// An independent encoder and parser of the container, written from
// docs/format.md, used to build images the Writer refuses to write and to
// locate fields for the tamper tests.

type sec struct {
	typ, flags uint32
	payload    []byte
	crc        *uint32 // overrides the computed CRC
	reserved   uint32
	autoPad    bool // payload: zeros up to the next page boundary (+ header)
	autoEnd    bool // payload: the offset of this section's header
	length     *uint64
}

func jsonSec(typ uint32, v any) sec {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return sec{typ: typ, flags: FlagCritical, payload: b}
}

// stdSecs is the section list the Writer produces.
func stdSecs(h *Header, objs *Objects, procs []*Process, data []byte) []sec {
	s := []sec{jsonSec(SecHeader, h)}
	if objs != nil {
		s = append(s, jsonSec(SecObjects, objs))
	}
	for _, p := range procs {
		s = append(s, jsonSec(SecProcess, p))
	}
	return append(s,
		sec{typ: SecPad, autoPad: true},
		sec{typ: SecData, flags: FlagCritical, payload: data},
		sec{typ: SecEnd, flags: FlagCritical, autoEnd: true})
}

func assemble(version uint32, secs []sec) []byte {
	b := make([]byte, 16)
	copy(b, Magic)
	binary.LittleEndian.PutUint32(b[8:], version)
	for _, s := range secs {
		p := s.payload
		if s.autoPad {
			p = make([]byte, (4096-(len(b)+48)%4096)%4096)
		}
		if s.autoEnd {
			p = binary.LittleEndian.AppendUint64(nil, uint64(len(b)))
		}
		crc := Checksum(0, p)
		if s.crc != nil {
			crc = *s.crc
		}
		n := uint64(len(p))
		if s.length != nil {
			n = *s.length
		}
		b = binary.LittleEndian.AppendUint32(b, s.typ)
		b = binary.LittleEndian.AppendUint32(b, s.flags)
		b = binary.LittleEndian.AppendUint64(b, n)
		b = binary.LittleEndian.AppendUint32(b, crc)
		b = binary.LittleEndian.AppendUint32(b, s.reserved)
		b = append(b, p...)
	}
	return b
}

// rawSec is a section as parseSections finds it.
type rawSec struct {
	off      int // offset of the 24-byte header
	typ      uint32
	flags    uint32
	length   uint64
	crc      uint32
	reserved uint32
}

func (s rawSec) payloadOff() int { return s.off + 24 }

// parseSections splits a well-formed image into sections without any of
// the package's code.
func parseSections(t testing.TB, b []byte) []rawSec {
	t.Helper()
	var out []rawSec
	off := 16
	for off+24 <= len(b) {
		s := rawSec{
			off:      off,
			typ:      binary.LittleEndian.Uint32(b[off:]),
			flags:    binary.LittleEndian.Uint32(b[off+4:]),
			length:   binary.LittleEndian.Uint64(b[off+8:]),
			crc:      binary.LittleEndian.Uint32(b[off+16:]),
			reserved: binary.LittleEndian.Uint32(b[off+20:]),
		}
		out = append(out, s)
		off += 24 + int(s.length)
		if s.typ == SecEnd {
			break
		}
	}
	if off != len(b) {
		t.Fatalf("parseSections: stopped at %d of %d bytes", off, len(b))
	}
	return out
}

func decodeBytes(b []byte) (*Image, error) { return Decode(bytes.NewReader(b), int64(len(b))) }

// isOneOf reports whether err wraps one of targets.
func isOneOf(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

var allErrs = []error{ErrBadMagic, ErrVersion, ErrChecksum, ErrTruncated, ErrCorrupt}

// ---------------------------------------------------------------------------
// Round trip.

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  sampleOpts
		chunk int
	}{
		{"one process", sampleOpts{nproc: 1, objects: true}, 4096},
		{"one small process, byte chunks", sampleOpts{nproc: 1, small: true}, 1},
		{"two processes, odd chunks", sampleOpts{nproc: 2, objects: true}, 777},
		{"two small processes with objects and a zombie", sampleOpts{nproc: 2, small: true, objects: true, zombie: true}, 4096},
		{"three small processes, one write", sampleOpts{nproc: 3, small: true}, 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := buildSample(tc.opts)
			path := filepath.Join(t.TempDir(), "img.chpox")
			if err := writeImage(path, s.h, s.objs, s.procs, s.data, tc.chunk); err != nil {
				t.Fatal(err)
			}
			img, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if diff := cmp.Diff(*s.h, img.Header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(s.procs, img.Processes); diff != "" {
				t.Errorf("processes (-want +got):\n%s", diff)
			}
			wantObjs := Objects{}
			if s.objs != nil {
				wantObjs = *s.objs
			}
			if diff := cmp.Diff(wantObjs, img.Objects, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
			if off := img.DataFileOffset(); off%4096 != 0 {
				t.Errorf("DataFileOffset() = %d, not page-aligned", off)
			}
			if got, want := img.DataCRC(), Checksum(0, s.data); got != want {
				t.Errorf("DataCRC() = %#x, want %#x", got, want)
			}
			if err := img.VerifyData(); err != nil {
				t.Errorf("VerifyData: %v", err)
			}
			all, err := io.ReadAll(img.Data())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(all, s.data) {
				t.Errorf("Data() returns %d bytes that differ from the %d written", len(all), len(s.data))
			}
			// Every run the records name holds the bytes written for it.
			nruns := 0
			check := func(where string, r DataRun) {
				nruns++
				want, ok := s.runs[r]
				if !ok {
					t.Errorf("%s: run %+v was never written", where, r)
					return
				}
				got := make([]byte, r.Len)
				if _, err := img.Data().ReadAt(got, int64(r.Off)); err != nil {
					t.Errorf("%s: read run %+v: %v", where, r, err)
				} else if !bytes.Equal(got, want) {
					t.Errorf("%s: run %+v holds other bytes than written", where, r)
				}
			}
			for _, p := range img.Processes {
				for _, v := range p.VMAs {
					for _, r := range v.Pages {
						check(fmt.Sprintf("pid %d vma %#x", p.PID, v.Start), r)
					}
				}
				for _, f := range p.Files {
					for _, r := range f.Content {
						check(fmt.Sprintf("pid %d fd %d", p.PID, f.FD), r)
					}
				}
				if p.ExeFile != nil {
					for _, r := range p.ExeFile.Content {
						check(fmt.Sprintf("pid %d exe", p.PID), r)
					}
				}
			}
			for _, m := range img.Objects.Shm {
				for _, r := range m.Pages {
					check(fmt.Sprintf("shm %d", m.ID), r)
				}
			}
			for _, p := range img.Objects.Pipes {
				for _, r := range p.Data {
					check(fmt.Sprintf("pipe %d", p.ID), r)
				}
			}
			for _, s := range img.Objects.InetSockets {
				var runs []DataRun
				if s.Repair != nil {
					runs = append(append(runs, s.Repair.SendQueue...), s.Repair.RecvQueue...)
				}
				for _, d := range s.Datagrams {
					runs = append(runs, d.Data...)
				}
				for _, r := range runs {
					check(fmt.Sprintf("inet socket %d", s.ID), r)
				}
			}
			if nruns != len(s.runs) {
				t.Errorf("records name %d runs, %d were written", nruns, len(s.runs))
			}
			// The file is byte for byte what the specification describes.
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if want := assemble(Version, s.secs()); !bytes.Equal(b, want) {
				t.Errorf("writer output (%d bytes) differs from the spec encoding (%d bytes)", len(b), len(want))
			}
		})
	}
}

func TestEmptyDataSection(t *testing.T) {
	p := &Process{PID: 7, Threads: []Thread{{TID: 7}}, VMAs: []VMA{{Start: 0x1000, End: 0x2000, Kind: VMAVDSO}}}
	path := filepath.Join(t.TempDir(), "img")
	if err := writeImage(path, sampleHeader(1, 0), nil, []*Process{p}, nil, 1); err != nil {
		t.Fatal(err)
	}
	img, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.DataFileOffset()%4096 != 0 || img.Data().Size() != 0 {
		t.Errorf("data at %d size %d, want page-aligned and empty", img.DataFileOffset(), img.Data().Size())
	}
	if err := img.VerifyData(); err != nil {
		t.Error(err)
	}
	if st, _ := os.Stat(path); st.Size() != 4096+32 {
		t.Errorf("file is %d bytes, want %d", st.Size(), 4096+32)
	}
}

// ---------------------------------------------------------------------------
// Writer: file handling.

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriterFile(t *testing.T) {
	s := makeSample(1, true)
	dir := t.TempDir()
	path := filepath.Join(dir, "img.chpox")
	s.write(t, path)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("image mode %v, want 0600", st.Mode().Perm())
	}
	if diff := cmp.Diff([]string{"img.chpox"}, dirNames(t, dir)); diff != "" {
		t.Errorf("directory after Commit (-want +got):\n%s", diff)
	}
}

func TestWriterTempFileMode(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(filepath.Join(dir, "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	names := dirNames(t, dir)
	if len(names) != 1 || !strings.HasPrefix(names[0], ".img.tmp-") {
		t.Fatalf("directory while writing: %q, want one .img.tmp-* file", names)
	}
	st, err := os.Stat(filepath.Join(dir, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("temp file mode %v, want 0600", st.Mode().Perm())
	}
}

// TestWriterFailureKeepsPrevious: whatever goes wrong before Commit returns,
// the previous image at the path stays byte-identical and no temporary file
// is left behind.
func TestWriterFailureKeepsPrevious(t *testing.T) {
	s := makeSample(1, true)
	n := uint64(len(s.data))
	for _, tc := range []struct {
		name string
		run  func(w *Writer) error // returns the Commit error, or nil after Abort
	}{
		{"abort after data", func(w *Writer) error {
			w.WriteHeader(s.h)
			w.WriteProcess(s.procs[0])
			w.BeginData(n)
			w.Write(s.data)
			w.Abort()
			return nil
		}},
		{"abort right after create", func(w *Writer) error {
			w.Abort()
			return nil
		}},
		{"short data section", func(w *Writer) error {
			w.WriteHeader(s.h)
			w.WriteProcess(s.procs[0])
			w.BeginData(n)
			w.Write(s.data[:n-1])
			return w.Commit()
		}},
		{"data section overflow", func(w *Writer) error {
			w.WriteHeader(s.h)
			w.WriteProcess(s.procs[0])
			w.BeginData(n)
			w.Write(s.data)
			if _, err := w.Write([]byte{1}); err == nil {
				return errors.New("overflowing Write succeeded")
			}
			return w.Commit()
		}},
		{"commit without data section", func(w *Writer) error {
			w.WriteHeader(s.h)
			w.WriteProcess(s.procs[0])
			return w.Commit()
		}},
		{"process before header", func(w *Writer) error {
			if err := w.WriteProcess(s.procs[0]); err == nil {
				return errors.New("WriteProcess before WriteHeader succeeded")
			}
			w.WriteHeader(s.h)
			w.BeginData(n)
			w.Write(s.data)
			return w.Commit()
		}},
		{"header declares other process count", func(w *Writer) error {
			h := *s.h
			h.Processes = 2
			w.WriteHeader(&h)
			w.WriteProcess(s.procs[0])
			if err := w.BeginData(n); err == nil {
				return errors.New("BeginData with a wrong process count succeeded")
			}
			w.Write(s.data)
			return w.Commit()
		}},
		{"header declares other data size", func(w *Writer) error {
			w.WriteHeader(s.h)
			w.WriteProcess(s.procs[0])
			if err := w.BeginData(n + 4096); err == nil {
				return errors.New("BeginData with a wrong size succeeded")
			}
			return w.Commit()
		}},
		{"commit twice", func(w *Writer) error {
			w.WriteHeader(s.h)
			w.WriteProcess(s.procs[0])
			w.BeginData(n)
			w.Write(s.data)
			w.Abort()
			return w.Commit()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "img")
			prev := s.write(t, path)
			w, err := Create(path)
			if err != nil {
				t.Fatal(err)
			}
			err = tc.run(w)
			if aborted := strings.HasPrefix(tc.name, "abort"); !aborted && err == nil {
				t.Error("Commit succeeded")
			} else if aborted && err != nil {
				t.Error(err)
			}
			got, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if !bytes.Equal(got, prev) {
				t.Error("previous image changed")
			}
			if diff := cmp.Diff([]string{"img"}, dirNames(t, dir)); diff != "" {
				t.Errorf("directory (-want +got):\n%s", diff)
			}
			w.Abort() // harmless a second time
		})
	}
}

func TestWriterReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img")
	makeSample(2, false).write(t, path)
	s := makeSample(1, true)
	s.write(t, path)
	img, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if diff := cmp.Diff(s.procs, img.Processes); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestAbortAfterCommit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img")
	s := makeSample(1, true)
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteHeader(s.h)
	w.WriteProcess(s.procs[0])
	w.BeginData(uint64(len(s.data)))
	w.Write(s.data)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if err := w.Commit(); err == nil {
		t.Error("second Commit succeeded")
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Error("Write after Commit succeeded")
	}
	img, err := Open(path)
	if err != nil {
		t.Fatalf("image after Commit+Abort: %v", err)
	}
	img.Close()
	if diff := cmp.Diff([]string{"img"}, dirNames(t, dir)); diff != "" {
		t.Errorf("directory (-want +got):\n%s", diff)
	}
}

func TestCreateMissingDir(t *testing.T) {
	_, err := Create(filepath.Join(t.TempDir(), "no", "such", "img"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Create in a missing directory: %v, want ErrNotExist", err)
	}
}

// ---------------------------------------------------------------------------
// Damage: every flipped bit of the metadata is refused.

// region names the part of the image an offset falls in and the errors a
// flip there may produce. okOpen means Open must succeed and VerifyData must
// fail.
type region struct {
	name   string
	errs   []error
	okOpen bool
}

func classify(secs []rawSec, off int) region {
	switch {
	case off < 8:
		return region{"magic", []error{ErrBadMagic}, false}
	case off < 12:
		return region{"version", []error{ErrVersion}, false}
	case off < 16:
		return region{"preamble reserved", []error{ErrCorrupt}, false}
	}
	for _, s := range secs {
		if off >= s.payloadOff()+int(s.length) {
			continue
		}
		field := off - s.off
		name := fmt.Sprintf("section %d ", s.typ)
		switch {
		case field < 4:
			// A type turned into an unknown critical type reads like a
			// section from a newer chpox.
			errs := []error{ErrCorrupt}
			if s.typ == SecProcess || s.typ == SecObjects {
				errs = append(errs, ErrVersion)
			}
			return region{name + "type", errs, false}
		case field < 8:
			return region{name + "flags", []error{ErrCorrupt}, false}
		case field < 16:
			return region{name + "length", []error{ErrTruncated, ErrChecksum, ErrCorrupt}, false}
		case field < 20 && s.typ == SecData:
			return region{name + "crc", []error{ErrChecksum}, true}
		case field < 20:
			return region{name + "crc", []error{ErrChecksum}, false}
		case field < 24:
			return region{name + "reserved", []error{ErrCorrupt}, false}
		case s.typ == SecData:
			return region{name + "payload", []error{ErrChecksum}, true}
		default:
			return region{name + "payload", []error{ErrChecksum}, false}
		}
	}
	panic(fmt.Sprintf("offset %d beyond the image", off))
}

func checkFlip(t *testing.T, img []byte, secs []rawSec, off int, bit uint) {
	t.Helper()
	b := bytes.Clone(img)
	b[off] ^= 1 << bit
	r := classify(secs, off)
	got, err := decodeBytes(b)
	if r.okOpen {
		if err != nil {
			t.Errorf("flip bit %d of byte %d (%s): Decode: %v, want success", bit, off, r.name, err)
			return
		}
		if err := got.VerifyData(); !errors.Is(err, ErrChecksum) {
			t.Errorf("flip bit %d of byte %d (%s): VerifyData: %v, want ErrChecksum", bit, off, r.name, err)
		}
		return
	}
	if err == nil {
		t.Errorf("flip bit %d of byte %d (%s) went unnoticed", bit, off, r.name)
	} else if !isOneOf(err, r.errs...) {
		t.Errorf("flip bit %d of byte %d (%s): %v, want one of %v", bit, off, r.name, err, r.errs)
	}
}

// TestTamper flips bits all over an image with two processes and an objects
// section: every bit of
// the preamble, of every section header and of the end section; one bit of
// every other byte before the data payload (header, process and pad
// payloads: a CRC catches every single-bit error, so which bit does not
// matter); and samples of the data payload.
// readableVersionFlip tells whether flipping bit of byte off turns the
// preamble's version into another version this reader takes (3 into 2):
// the image then reads exactly as before, so there is nothing to notice.
func readableVersionFlip(img []byte, off int, bit uint) bool {
	if off < 8 || off >= 12 {
		return false
	}
	b := append([]byte(nil), img[8:12]...)
	b[off-8] ^= 1 << bit
	v := binary.LittleEndian.Uint32(b)
	return v >= MinVersion && v <= Version
}

func TestTamper(t *testing.T) {
	t.Parallel()
	s := buildSample(sampleOpts{nproc: 2, small: true, objects: true})
	img := s.write(t, filepath.Join(t.TempDir(), "img"))
	secs := parseSections(t, img)
	if secs[1].typ != SecObjects {
		t.Fatalf("second section is %d, want objects", secs[1].typ)
	}
	data := secs[len(secs)-2]
	if data.typ != SecData {
		t.Fatalf("second to last section is %d", data.typ)
	}
	dataStart, dataEnd := data.payloadOff(), data.payloadOff()+int(data.length)
	if dataStart%4096 != 0 {
		t.Fatalf("data payload at %d", dataStart)
	}
	allBits := make([]bool, len(img))
	for i := 0; i < 16; i++ {
		allBits[i] = true
	}
	for _, sc := range secs {
		for i := 0; i < 24; i++ {
			allBits[sc.off+i] = true
		}
	}
	for i := dataEnd; i < len(img); i++ {
		allBits[i] = true
	}
	dataStride := 61
	if testing.Short() {
		dataStride = 509
	}
	flips := 0
	for off := range img {
		switch {
		case allBits[off]:
			for bit := uint(0); bit < 8; bit++ {
				if readableVersionFlip(img, off, bit) {
					continue
				}
				checkFlip(t, img, secs, off, bit)
				flips++
			}
		case off < dataStart:
			checkFlip(t, img, secs, off, uint(off%8))
			flips++
		case (off-dataStart)%dataStride == 0 || off == dataEnd-1:
			checkFlip(t, img, secs, off, uint(off%8))
			flips++
		}
	}
	t.Logf("%d flips; %d bytes of metadata, %d of data", flips, dataStart+len(img)-dataEnd, dataEnd-dataStart)
}

// TestTamperOpen repeats some flips on files through Open.
func TestTamperOpen(t *testing.T) {
	dir := t.TempDir()
	s := makeSample(1, true)
	img := s.write(t, filepath.Join(dir, "orig"))
	secs := parseSections(t, img)
	var offs []int
	for i := 0; i < 16; i++ {
		offs = append(offs, i)
	}
	for _, sc := range secs {
		for i := 0; i < 24; i += 3 {
			offs = append(offs, sc.off+i)
		}
		if sc.length > 0 {
			offs = append(offs, sc.payloadOff()+int(sc.length)/2)
		}
	}
	for _, off := range offs {
		b := bytes.Clone(img)
		b[off] ^= 0x10
		path := filepath.Join(dir, fmt.Sprintf("flip-%d", off))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r := classify(secs, off)
		got, err := Open(path)
		if r.okOpen {
			if err != nil {
				t.Errorf("byte %d (%s): Open: %v", off, r.name, err)
				continue
			}
			if err := got.VerifyData(); !errors.Is(err, ErrChecksum) {
				t.Errorf("byte %d (%s): VerifyData: %v, want ErrChecksum", off, r.name, err)
			}
			got.Close()
			continue
		}
		if err == nil {
			got.Close()
			t.Errorf("byte %d (%s): flip went unnoticed", off, r.name)
		} else if !isOneOf(err, r.errs...) {
			t.Errorf("byte %d (%s): %v, want one of %v", off, r.name, err, r.errs)
		}
	}
}

func TestTruncated(t *testing.T) {
	t.Parallel()
	img := makeSample(1, true).write(t, filepath.Join(t.TempDir(), "img"))
	secs := parseSections(t, img)
	dataStart := secs[len(secs)-2].payloadOff()
	dataEnd := secs[len(secs)-1].off
	for n := 0; n < len(img); n++ {
		if n > dataStart && n < dataEnd && n%97 != 0 {
			continue // a sample of the cuts inside the data payload
		}
		_, err := decodeBytes(img[:n])
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("image cut to %d of %d bytes: %v, want ErrTruncated", n, len(img), err)
		}
	}
	// The same through a real file.
	path := filepath.Join(t.TempDir(), "cut")
	for _, n := range []int{0, 5, 8, 15, 16, 40, 4096, len(img) - 32, len(img) - 1} {
		if err := os.WriteFile(path, img[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path); !errors.Is(err, ErrTruncated) {
			t.Errorf("Open of %d-byte prefix: %v, want ErrTruncated", n, err)
		}
	}
}

func TestNotAnImage(t *testing.T) {
	good := makeSample(1, true).write(t, filepath.Join(t.TempDir(), "img"))
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"magic prefix", []byte("\x89CH"), ErrTruncated},
		{"magic only", []byte(Magic), ErrTruncated},
		{"short text", []byte("hi\n"), ErrBadMagic},
		{"ELF", []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00>\x00"), ErrBadMagic},
		{"text-mode mangled CRLF", append([]byte("\x89CHPOX\n"), good[8:]...), ErrBadMagic},
		{"high bit stripped", append([]byte("\x09CHPOX\r\n"), good[8:]...), ErrBadMagic},
		{"trailing garbage", append(bytes.Clone(good), 0), ErrCorrupt},
		{"trailing page", append(bytes.Clone(good), make([]byte, 4096)...), ErrCorrupt},
		{"image twice", append(bytes.Clone(good), good...), ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeBytes(tc.b); !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a missing file: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Versions and unknown sections.

func TestVersion(t *testing.T) {
	s := makeSample(1, true)
	for _, v := range []uint32{0, MinVersion - 1, Version + 1, 1 << 31} {
		b := assemble(v, s.secs())
		_, err := decodeBytes(b)
		if !errors.Is(err, ErrVersion) {
			t.Errorf("version %d: %v, want ErrVersion", v, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("version %d", v)) || !strings.Contains(msg, fmt.Sprintf("versions %d to %d", MinVersion, Version)) {
			t.Errorf("version %d: message %q names not both versions", v, msg)
		}
	}
}

func TestUnknownSections(t *testing.T) {
	s := makeSample(2, true)
	std := s.secs() // header, proc, proc, pad, data, end
	insert := func(at int, extra ...sec) []sec {
		out := append([]sec(nil), std[:at]...)
		out = append(out, extra...)
		return append(out, std[at:]...)
	}
	bad := uint32(0xdeadbeef)
	big := bytes.Repeat([]byte("future"), 2000)
	for _, tc := range []struct {
		name string
		secs []sec
		want error // nil: decodes to the sample
	}{
		{"non-critical after header", insert(1, sec{typ: 100, payload: []byte(`{"new":1}`)}), nil},
		{"non-critical between processes", insert(2, sec{typ: 0x7ffe, payload: big}), nil},
		{"non-critical before pad", insert(3, sec{typ: 200, payload: nil}), nil},
		{"several non-critical", insert(1, sec{typ: 100}, sec{typ: 101, payload: big}, sec{typ: 1 << 31, payload: []byte("x")}), nil},
		// Unknown non-critical sections are skipped unread.
		{"non-critical with bad crc", insert(1, sec{typ: 100, payload: big, crc: &bad}), nil},
		{"critical after header", insert(1, sec{typ: 100, flags: FlagCritical, payload: []byte("{}")}), ErrVersion},
		{"critical before pad", insert(3, sec{typ: 0x1234, flags: FlagCritical}), ErrVersion},
		{"non-critical after pad", insert(4, sec{typ: 100}), ErrCorrupt},
		{"non-critical after data", insert(5, sec{typ: 100}), ErrCorrupt},
		{"non-critical first", insert(0, sec{typ: 100}), ErrCorrupt},
		{"undefined flag on unknown section", insert(1, sec{typ: 100, flags: 2}), ErrCorrupt},
		{"reserved set on unknown section", insert(1, sec{typ: 100, reserved: 1}), ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := decodeBytes(assemble(Version, tc.secs))
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Errorf("Decode: %v, want %v", err, tc.want)
				}
				if errors.Is(err, ErrVersion) && !strings.Contains(err.Error(), "upgrade") {
					t.Errorf("message %q does not tell to upgrade", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := cmp.Diff(s.procs, img.Processes); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if img.DataFileOffset()%4096 != 0 {
				t.Errorf("data at %d", img.DataFileOffset())
			}
			if err := img.VerifyData(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestUnknownJSONFields(t *testing.T) {
	s := makeSample(1, true)
	secs := s.secs()
	for i := 0; i < 2; i++ {
		p := secs[i].payload
		secs[i].payload = append([]byte(`{"future_field":{"a":[1,2,3]},`), p[1:]...)
	}
	img, err := decodeBytes(assemble(Version, secs))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s.procs, img.Processes); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// padGap is the pad length that puts the data payload of sections
// header, process, pad, data on a page boundary (preamble 16 bytes,
// section headers 24).
func padGap(x []sec) int {
	used := 16 + 24 + len(x[0].payload) + 24 + len(x[1].payload) + 24 + 24
	return (4096 - used%4096) % 4096
}

// TestStructure covers container rules a bit flip cannot always reach.
func TestStructure(t *testing.T) {
	s := makeSample(1, true)
	std := func() []sec { return s.secs() } // header, proc, pad, data, end
	without := func(i int) []sec { x := std(); return append(x[:i], x[i+1:]...) }
	with := func(f func(x []sec)) []sec { x := std(); f(x); return x }
	u := func(v uint64) *uint64 { return &v }
	for _, tc := range []struct {
		name string
		secs []sec
		want error
	}{
		{"baseline", std(), nil},
		{"no header", without(0), ErrCorrupt},
		{"no pad", without(2), ErrCorrupt},
		{"no data", without(3), ErrCorrupt},
		{"no end", without(4), ErrTruncated},
		{"no process", without(1), ErrCorrupt},
		{"two headers", append([]sec{std()[0]}, std()...), ErrCorrupt},
		{"process after data", with(func(x []sec) { x[4] = x[1] }), ErrCorrupt},
		{"two pads", with(func(x []sec) { x[1] = sec{typ: SecPad} }), ErrCorrupt},
		{"pad not zero", with(func(x []sec) {
			x[2] = sec{typ: SecPad, payload: append(make([]byte, padGap(x)-1), 1)}
		}), ErrCorrupt},
		{"pad a page too long", with(func(x []sec) {
			x[2] = sec{typ: SecPad, payload: make([]byte, padGap(x)+4096)}
		}), ErrCorrupt},
		{"data not aligned", with(func(x []sec) { x[2] = sec{typ: SecPad, payload: []byte{0, 0, 0}} }), ErrCorrupt},
		{"header not critical", with(func(x []sec) { x[0].flags = 0 }), ErrCorrupt},
		{"pad critical", with(func(x []sec) { x[2].flags = FlagCritical }), ErrCorrupt},
		{"data not critical", with(func(x []sec) { x[3].flags = 0 }), ErrCorrupt},
		{"type 0", with(func(x []sec) { x[1].typ = 0 }), ErrCorrupt},
		{"end marker wrong", with(func(x []sec) { x[4] = sec{typ: SecEnd, flags: FlagCritical, payload: make([]byte, 8)} }), ErrCorrupt},
		{"end marker too long", with(func(x []sec) { x[4] = sec{typ: SecEnd, flags: FlagCritical, payload: make([]byte, 16)} }), ErrCorrupt},
		{"data length beyond file", with(func(x []sec) { x[3].length = u(uint64(len(s.data)) + 100) }), ErrTruncated},
		{"huge length", with(func(x []sec) { x[1].length = u(math.MaxUint64) }), ErrTruncated},
		{"objects section", with(func(x []sec) { x[1] = jsonSec(SecObjects, &Objects{}) }), ErrCorrupt}, // replaces the process
		{"objects section before the process", append(std()[:1], append([]sec{jsonSec(SecObjects, &Objects{})}, std()[1:]...)...), nil},
		{"objects section after the process", append(std()[:2], append([]sec{jsonSec(SecObjects, &Objects{})}, std()[2:]...)...), nil},
		{"two objects sections", append(std()[:1], append([]sec{jsonSec(SecObjects, &Objects{}), jsonSec(SecObjects, &Objects{})}, std()[1:]...)...), ErrCorrupt},
		{"objects section after the pad", append(std()[:3], append([]sec{jsonSec(SecObjects, &Objects{})}, std()[3:]...)...), ErrCorrupt},
		{"objects section not critical", append(std()[:1], append([]sec{{typ: SecObjects, payload: []byte("{}")}}, std()[1:]...)...), ErrCorrupt},
		{"objects json broken", append(std()[:1], append([]sec{{typ: SecObjects, flags: FlagCritical, payload: []byte("{")}}, std()[1:]...)...), ErrCorrupt},
		{"header json broken", with(func(x []sec) { x[0].payload = []byte(`{"arch":`) }), ErrCorrupt},
		{"process json wrong type", with(func(x []sec) { x[1].payload = []byte(`{"pid":"one"}`) }), ErrCorrupt},
		{"process json null", with(func(x []sec) { x[1].payload = []byte(`null`) }), ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeBytes(assemble(Version, tc.secs))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMetaSectionLimit(t *testing.T) {
	// A section claiming more than the limit is refused before allocation,
	// even if the file is that long.
	s := makeSample(1, true)
	secs := s.secs()
	secs[1].payload = append(secs[1].payload, make([]byte, maxMetaSection)...)
	_, err := decodeBytes(assemble(Version, secs))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "limit") {
		t.Errorf("Decode: %v, want ErrCorrupt about the limit", err)
	}
}

// ---------------------------------------------------------------------------
// Validation of the records.

// timerfdOf is the timerfd state of a sample process (its last fd).
func timerfdOf(p *Process) *Timerfd { return p.Files[len(p.Files)-1].Timerfd }

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(h *Header, ps []*Process, dataLen uint64)
		want   error
	}{
		{"baseline", func(*Header, []*Process, uint64) {}, nil},
		{"header counts more processes", func(h *Header, _ []*Process, _ uint64) { h.Processes = 3 }, ErrCorrupt},
		{"header counts fewer processes", func(h *Header, _ []*Process, _ uint64) { h.Processes = 1 }, ErrCorrupt},
		{"header data bytes wrong", func(h *Header, _ []*Process, _ uint64) { h.DataBytes++ }, ErrCorrupt},
		{"pid 0", func(_ *Header, ps []*Process, _ uint64) { ps[0].PID = 0 }, ErrCorrupt},
		{"duplicate pid", func(_ *Header, ps []*Process, _ uint64) { ps[1].PID = ps[0].PID }, ErrCorrupt},
		{"duplicate tid", func(_ *Header, ps []*Process, _ uint64) { ps[1].Threads[1].TID = ps[0].Threads[0].TID }, ErrCorrupt},
		{"no threads", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads = nil }, ErrCorrupt},
		{"tid 0", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[1].TID = 0 }, ErrCorrupt},
		{"xsave too big", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[0].XSave = make([]byte, maxXSave+1) }, ErrCorrupt},
		{"short pending siginfo", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[0].Pending[0] = make([]byte, 127) }, ErrCorrupt},
		{"short shared siginfo", func(_ *Header, ps []*Process, _ uint64) { ps[1].SharedPending = [][]byte{nil} }, ErrCorrupt},
		{"unaligned vma start", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[0].Start += 8 }, ErrCorrupt},
		{"unaligned vma end", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[5].End -= 1 }, ErrCorrupt},
		{"empty vma", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[5].End = ps[0].VMAs[5].Start }, ErrCorrupt},
		{"overlapping vmas", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[1].Start = 0x401000 }, ErrCorrupt},
		{"vmas out of order", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].VMAs[4], ps[0].VMAs[5] = ps[0].VMAs[5], ps[0].VMAs[4]
		}, ErrCorrupt},
		{"unknown vma kind", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[2].Kind = "hugetlb" }, ErrCorrupt},
		{"file vma without file", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[0].File = nil }, ErrCorrupt},
		{"run before vma", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[2].Pages[0].Addr = 0x4ff000 }, ErrCorrupt},
		{"run past vma end", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[2].Pages[1].Len = 0x2000 }, ErrCorrupt},
		{"run wholly after vma", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[2].Pages[1].Addr = 0x600000 }, ErrCorrupt},
		{"run in another vma", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[1].Pages[0].Addr = 0x500000 }, ErrCorrupt},
		{"run address overflows", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].VMAs[2].Pages[1].Addr = math.MaxUint64 &^ 4095
		}, ErrCorrupt},
		{"runs overlap", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[2].Pages[1].Addr = 0x501000 }, ErrCorrupt},
		{"run unaligned address", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[2].Pages[1].Addr += 1 }, ErrCorrupt},
		{"run unaligned length", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[2].Pages[0].Len -= 1 }, ErrCorrupt},
		{"run empty", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[2].Pages[0].Len = 0 }, ErrCorrupt},
		{"run beyond data section", func(_ *Header, ps []*Process, n uint64) { ps[1].VMAs[2].Pages[1].Off = n - 0x800 }, ErrCorrupt},
		{"run offset beyond data section", func(_ *Header, ps []*Process, n uint64) { ps[0].VMAs[2].Pages[0].Off = n + 1 }, ErrCorrupt},
		{"run offset wraps", func(_ *Header, ps []*Process, _ uint64) { ps[0].VMAs[2].Pages[0].Off = math.MaxUint64 - 0xfff }, ErrCorrupt},
		{"run ends at data end", func(_ *Header, ps []*Process, n uint64) {
			// the stack page and the deleted file's contents trade places
			stack, content := &ps[1].VMAs[4].Pages[0], ps[1].Files[2].Content
			content[0].Off, content[1].Off = stack.Off, stack.Off+100
			stack.Off = n - 0x1000
		}, nil},
		{"file content beyond data section", func(_ *Header, ps []*Process, n uint64) { ps[1].Files[2].Content[1].Off = n - 49 }, ErrCorrupt},
		{"file content offset wraps", func(_ *Header, ps []*Process, _ uint64) { ps[1].Files[2].Content[1].Off = math.MaxUint64 }, ErrCorrupt},
		{"file content past largest offset", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Files[2].Content[1].Addr = math.MaxInt64 - 10
		}, ErrCorrupt},
		{"file content up to largest offset", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Files[2].Content[1].Addr = math.MaxInt64 - 50
			ps[0].Files[2].Size = 0 // an image before version 3: no size
		}, nil},
		{"file content beyond its size", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[2].Size = 8200 }, ErrCorrupt},
		{"negative file size", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[2].Size = -1 }, ErrCorrupt},
		{"size of a regular file", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].Size = 10 }, ErrCorrupt},
		{"content of a regular file", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Files[1].Content, ps[0].Files[2].Content = ps[0].Files[2].Content, nil
		}, ErrCorrupt},
		{"deleted regular file record", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].Deleted = true }, ErrCorrupt},
		{"working directory mode without a removed one", func(_ *Header, ps []*Process, _ uint64) { ps[0].CwdDeleted = false }, ErrCorrupt},
		{"executable record of another kind", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].ExeFile = &File{Kind: FileRegular, Path: "/bin/x"}
		}, ErrCorrupt},
		{"executable content beyond its size", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].ExeFile = &File{Kind: FileDeleted, Path: "/bin/x", Size: 10, Content: ps[0].Files[2].Content}
			ps[0].Files[2].Content = nil
		}, ErrCorrupt},
		{"O_PATH kind without O_PATH", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Files[1].Kind = FilePath
		}, ErrCorrupt},
		{"empty file content run", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[2].Content[1].Len = 0 }, nil},
		{"page runs share data", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].VMAs[2].Pages[1].Off = ps[0].VMAs[2].Pages[0].Off + 0x1000
		}, ErrCorrupt},
		{"file content and pages share data", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Files[2].Content[0].Off = ps[0].VMAs[1].Pages[0].Off + 4000
		}, ErrCorrupt},
		{"empty content run inside a page run", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Files[2].Content[1] = DataRun{Off: ps[0].VMAs[1].Pages[0].Off + 8}
		}, nil},
		{"two processes share data", func(_ *Header, ps []*Process, _ uint64) { ps[1].VMAs[1].Pages[0].Off = ps[0].VMAs[1].Pages[0].Off }, ErrCorrupt},
		{"negative fd", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[0].FD = -1 }, ErrCorrupt},
		{"duplicate fd", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].FD = 0 }, ErrCorrupt},
		{"same fd in two processes", func(_ *Header, ps []*Process, _ uint64) {}, nil},
		{"unknown file kind", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[0].Kind = "socket" }, ErrCorrupt},
		{"itimer twice", func(_ *Header, ps []*Process, _ uint64) { ps[0].ITimers[1].Which = ITimerReal }, ErrCorrupt},
		{"itimer unknown", func(_ *Header, ps []*Process, _ uint64) { ps[0].ITimers[1].Which = 3 }, ErrCorrupt},
		{"itimer not armed", func(_ *Header, ps []*Process, _ uint64) { ps[0].ITimers[1].ValueNS = 0 }, ErrCorrupt},
		{"itimer expired, signal pending", func(_ *Header, ps []*Process, _ uint64) { ps[0].ITimers[0].ValueNS = 0 }, nil},
		{"posix timer id twice", func(_ *Header, ps []*Process, _ uint64) { ps[0].PosixTimers[1].ID = 3 }, ErrCorrupt},
		{"posix timer id negative", func(_ *Header, ps []*Process, _ uint64) { ps[0].PosixTimers[1].ID = -1 }, ErrCorrupt},
		{"posix timer notify unknown", func(_ *Header, ps []*Process, _ uint64) { ps[0].PosixTimers[2].Notify = 3 }, ErrCorrupt},
		{"posix timer to a foreign thread", func(_ *Header, ps []*Process, _ uint64) { ps[0].PosixTimers[1].TID = 99999 }, ErrCorrupt},
		{"posix timer thread without THREAD_ID", func(_ *Header, ps []*Process, _ uint64) { ps[0].PosixTimers[0].TID = ps[0].PID }, ErrCorrupt},
		{"posix timer absolute on monotonic", func(_ *Header, ps []*Process, _ uint64) { ps[0].PosixTimers[1].AbsNS = 5 }, ErrCorrupt},
		{"posix timer absolute unarmed", func(_ *Header, ps []*Process, _ uint64) { ps[0].PosixTimers[0].ValueNS = 0 }, ErrCorrupt},
		{"posix timer negative time", func(_ *Header, ps []*Process, _ uint64) { ps[0].PosixTimers[1].IntervalNS = -1 }, ErrCorrupt},
		{"timerfd without state", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[len(ps[0].Files)-1].Timerfd = nil }, ErrCorrupt},
		{"timerfd state on a file", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[0].Timerfd = &Timerfd{} }, ErrCorrupt},
		{"timerfd clock unknown", func(_ *Header, ps []*Process, _ uint64) { timerfdOf(ps[0]).Clock = 2 }, ErrCorrupt},
		{"timerfd flags unknown", func(_ *Header, ps []*Process, _ uint64) { timerfdOf(ps[0]).Flags = 4 }, ErrCorrupt},
		{"timerfd absolute without flag", func(_ *Header, ps []*Process, _ uint64) { timerfdOf(ps[0]).Flags = 0 }, ErrCorrupt},
		{"timerfd absolute on monotonic", func(_ *Header, ps []*Process, _ uint64) { timerfdOf(ps[0]).Clock = ClockMonotonic }, ErrCorrupt},
		{"unknown lock kind", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].Locks[0].Kind = "deleg" }, ErrCorrupt},
		{"flock on a byte range", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].Locks[0].Start = 4 }, ErrCorrupt},
		{"lock range ends before it starts", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].Locks[2].End = 4 }, ErrCorrupt},
		{"lock range negative", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].Locks[1].Start = -3 }, ErrCorrupt},
		{"lease signal on a flock", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].Locks[0].LeaseSignal = 10 }, ErrCorrupt},
		{"lease signal out of range", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].Locks[3].LeaseSignal = 65 }, ErrCorrupt},
		{"lock on a device", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Files[0].Locks = []Lock{{Kind: LockFlock, End: -1}}
		}, ErrCorrupt},
		{"stop signal not a stop signal", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Stopped, ps[0].StopSignal = true, 15
		}, ErrCorrupt},
		{"stop signal on a running process", func(_ *Header, ps []*Process, _ uint64) { ps[0].StopSignal = 20 }, ErrCorrupt},
		{"stop waited on a running process", func(_ *Header, ps []*Process, _ uint64) { ps[0].StopWaited = true }, ErrCorrupt},
		{"stopped by SIGTTOU, waited", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Stopped, ps[0].StopSignal, ps[0].StopWaited = true, 22, true
		}, nil},
		{"one-byte lock", func(_ *Header, ps []*Process, _ uint64) { ps[0].Files[1].Locks[2].End = 5 }, nil},
		{"no attributes", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Attrs, ps[0].Threads[0].Attrs, ps[0].Threads[1].Attrs = nil, nil, nil
		}, nil},
		{"nice out of range", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[0].Attrs.Nice = -21 }, ErrCorrupt},
		{"rt priority out of range", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[1].Attrs.Priority = 100 }, ErrCorrupt},
		{"unknown policy", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[0].Attrs.Policy = 4 }, ErrCorrupt},
		{"too many affinity words", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[0].Attrs.Affinity = make([]uint64, 129) }, ErrCorrupt},
		{"bad pdeathsig", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[0].Attrs.PdeathSig = 65 }, ErrCorrupt},
		{"bad oom_score_adj", func(_ *Header, ps []*Process, _ uint64) { ps[0].Attrs.OOMScoreAdj = 1001 }, ErrCorrupt},
		{"seccomp filter before its parent", func(_ *Header, ps []*Process, _ uint64) { ps[0].Seccomp[0].Parent = 2 }, ErrCorrupt},
		{"seccomp filter its own parent", func(_ *Header, ps []*Process, _ uint64) { ps[0].Seccomp[1].Parent = 2 }, ErrCorrupt},
		{"seccomp filter ids out of order", func(_ *Header, ps []*Process, _ uint64) { ps[0].Seccomp[1].ID = 3 }, ErrCorrupt},
		{"seccomp filter of 7 bytes", func(_ *Header, ps []*Process, _ uint64) { ps[0].Seccomp[1].Prog = make([]byte, 7) }, ErrCorrupt},
		{"empty seccomp filter", func(_ *Header, ps []*Process, _ uint64) { ps[0].Seccomp[1].Prog = nil }, ErrCorrupt},
		{"seccomp filter too long", func(_ *Header, ps []*Process, _ uint64) { ps[0].Seccomp[1].Prog = make([]byte, 8*4097) }, ErrCorrupt},
		{"thread names a missing filter", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[1].SeccompFilter = 3 }, ErrCorrupt},
		{"filter mode without a filter", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[1].SeccompFilter = 0 }, ErrCorrupt},
		{"strict mode with a filter", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[1].SeccompMode = SeccompModeStrict }, ErrCorrupt},
		{"strict mode", func(_ *Header, ps []*Process, _ uint64) {
			ps[0].Threads[1].SeccompMode, ps[0].Threads[1].SeccompFilter = SeccompModeStrict, 0
		}, nil},
		{"unknown seccomp mode", func(_ *Header, ps []*Process, _ uint64) { ps[0].Threads[0].SeccompMode = 3 }, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := makeSample(2, false)
			tc.mutate(s.h, s.procs, uint64(len(s.data)))
			_, err := decodeBytes(assemble(Version, s.secs()))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestValidateObjects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(o *Objects, ps []*Process, dataLen uint64)
		want   error
	}{
		{"baseline", func(*Objects, []*Process, uint64) {}, nil},
		{"shm id 0", func(o *Objects, _ []*Process, _ uint64) { o.Shm[0].ID = 0 }, ErrCorrupt},
		{"shm id twice", func(o *Objects, _ []*Process, _ uint64) { o.Shm = append(o.Shm, SharedMem{ID: 1}) }, ErrCorrupt},
		{"unreferenced shm", func(o *Objects, _ []*Process, _ uint64) { o.Shm = append(o.Shm, SharedMem{ID: 5, Size: 10}) }, nil},
		{"shm size beyond off_t", func(o *Objects, _ []*Process, _ uint64) { o.Shm[0].Size = 1 << 63 }, ErrCorrupt},
		{"shm run past object end", func(o *Objects, _ []*Process, _ uint64) { o.Shm[0].Pages[1].Len++ }, ErrCorrupt},
		{"shm run starts past object end", func(o *Objects, _ []*Process, _ uint64) { o.Shm[0].Pages[1].Addr = 0x3000 }, ErrCorrupt},
		{"shm run beyond data section", func(o *Objects, _ []*Process, n uint64) { o.Shm[0].Pages[0].Off = n }, ErrCorrupt},
		{"shm run shares data with a process", func(o *Objects, ps []*Process, _ uint64) { o.Shm[0].Pages[0].Off = ps[0].VMAs[2].Pages[0].Off }, ErrCorrupt},
		{"pipe id negative", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[1].ID = -1 }, ErrCorrupt},
		{"pipe id twice", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[1].ID = 1 }, ErrCorrupt},
		{"pipe capacity 0", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[1].Capacity = 0 }, ErrCorrupt},
		{"pipe capacity huge", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[1].Capacity = math.MaxInt32 + 1 }, ErrCorrupt},
		{"pipe data over capacity", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[0].Capacity = 299 }, ErrCorrupt},
		{"pipe data ends past capacity", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[0].Data[0].Addr = 65536 - 299 }, ErrCorrupt},
		{"pipe data ends at capacity", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[0].Data[0].Addr = 65536 - 300 }, nil},
		{"pipe data beyond data section", func(o *Objects, _ []*Process, n uint64) { o.Pipes[0].Data[0].Off = n - 299 }, ErrCorrupt},
		{"pipe data shares data with shm", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[0].Data[0].Off = o.Shm[0].Pages[1].Off }, ErrCorrupt},
		{"vma names missing shm", func(_ *Objects, ps []*Process, _ uint64) { ps[0].VMAs[3].Shm = 9 }, ErrCorrupt},
		{"vma names negative shm", func(_ *Objects, ps []*Process, _ uint64) { ps[0].VMAs[3].Shm = -1 }, ErrCorrupt},
		{"anon vma names shm", func(_ *Objects, ps []*Process, _ uint64) { ps[0].VMAs[2].Shm = 1 }, ErrCorrupt},
		{"shared-anon vma without shm", func(_ *Objects, ps []*Process, _ uint64) { ps[0].VMAs[3].Shm = 0 }, nil},
		{"pipe fd without pipe", func(_ *Objects, ps []*Process, _ uint64) { ps[0].Files[4].Pipe = 0 }, ErrCorrupt},
		{"deleted pipe without FIFO", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[0].Deleted = true }, ErrCorrupt},
		{"FIFO mode with a type", func(o *Objects, _ []*Process, _ uint64) { o.Pipes[1].Mode = 0o10640 }, ErrCorrupt},
		{"pipe fd names missing pipe", func(_ *Objects, ps []*Process, _ uint64) { ps[1].Files[5].Pipe = 3 }, ErrCorrupt},
		{"regular fd names pipe", func(_ *Objects, ps []*Process, _ uint64) { ps[0].Files[1].Pipe = 1 }, ErrCorrupt},
		{"file description 0", func(_ *Objects, ps []*Process, _ uint64) { ps[1].Files[1].Desc = 0 }, ErrCorrupt},
		{"inet family unknown", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[0].Family = 1 }, ErrCorrupt},
		{"inet raw socket", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[0].Type = 3 }, ErrCorrupt},
		{"inet SCTP", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[2].Protocol = 132 }, ErrCorrupt},
		{"inet id twice", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[1].ID = 1 }, ErrCorrupt},
		{"inet state unknown", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[0].State = "syn_sent" }, ErrCorrupt},
		{"inet established without repair", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[0].Repair = nil }, ErrCorrupt},
		{"inet listener with repair", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[2].Repair = &TCPRepair{MSS: 1} }, ErrCorrupt},
		{"inet UDP listening", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[1].State = InetListen }, ErrCorrupt},
		{"inet IPv6 address on IPv4", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[0].Peer = netip.MustParseAddrPort("[::1]:1") }, ErrCorrupt},
		{"inet queue beyond data", func(o *Objects, _ []*Process, n uint64) { o.InetSockets[0].Repair.SendQueue[0].Off = n - 10 }, ErrCorrupt},
		{"inet queue shares data", func(o *Objects, _ []*Process, _ uint64) {
			o.InetSockets[0].Repair.RecvQueue[0].Off = o.InetSockets[0].Repair.SendQueue[0].Off
		}, ErrCorrupt},
		{"inet queue huge", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[0].Repair.SendQueue[0].Len = 1 << 40 }, ErrCorrupt},
		{"inet unsent beyond queue", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[0].Repair.Unsent = 201 }, ErrCorrupt},
		{"inet wscale 15", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[0].Repair.SndWscale = 15 }, ErrCorrupt},
		{"inet mss 0", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[0].Repair.MSS = 0 }, ErrCorrupt},
		{"inet datagram on TCP", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[2].Datagrams = o.InetSockets[1].Datagrams }, ErrCorrupt},
		{"inet datagram too big", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[1].Datagrams[0].Data[0].Len = 65536 }, ErrCorrupt},
		{"inet datagram from nowhere", func(o *Objects, _ []*Process, _ uint64) { o.InetSockets[1].Datagrams[0].From = netip.AddrPort{} }, ErrCorrupt},
		{"inet datagram from IPv4 on IPv6", func(o *Objects, _ []*Process, _ uint64) {
			o.InetSockets[1].Datagrams[0].From = netip.MustParseAddrPort("127.0.0.1:9")
		}, ErrCorrupt},
		{"objects emptied, their data unreferenced", func(o *Objects, ps []*Process, _ uint64) {
			*o = Objects{}
			for _, p := range ps {
				p.VMAs[3].Shm = 0
				p.Files = p.Files[:4]
			}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := makeSample(2, false)
			tc.mutate(s.objs, s.procs, uint64(len(s.data)))
			_, err := decodeBytes(assemble(Version, s.secs()))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNoProcesses(t *testing.T) {
	h := sampleHeader(0, 0)
	_, err := decodeBytes(assemble(Version, stdSecs(h, nil, nil, nil)))
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("Decode: %v, want ErrCorrupt", err)
	}
}

// TestErrorsWrapOneSentinel: every refusal of an in-memory image wraps
// exactly one of the exported errors.
func TestErrorsWrapOneSentinel(t *testing.T) {
	img := makeSample(1, true).write(t, filepath.Join(t.TempDir(), "img"))
	secs := parseSections(t, img)
	for off := 0; off < len(img); off += 7 {
		if classify(secs, off).okOpen {
			continue
		}
		b := bytes.Clone(img)
		b[off] ^= 0x81
		_, err := decodeBytes(b)
		if err == nil {
			t.Errorf("flip at %d unnoticed", off)
			continue
		}
		n := 0
		for _, e := range allErrs {
			if errors.Is(err, e) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("flip at %d: %v wraps %d sentinels", off, err, n)
		}
	}
}

// eofReaderAt returns io.EOF with every read that reaches the end of its
// data, as the io.ReaderAt contract allows.
type eofReaderAt []byte

func (r eofReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r)) {
		return 0, io.EOF
	}
	n := copy(p, r[off:])
	if off+int64(n) == int64(len(r)) {
		return n, io.EOF
	}
	return n, nil
}

func TestReaderAtContract(t *testing.T) {
	s := makeSample(1, true)
	img := assemble(Version, s.secs())
	got, err := Decode(eofReaderAt(img), int64(len(img)))
	if err != nil {
		t.Fatalf("Decode with io.EOF on full reads: %v", err)
	}
	if err := got.VerifyData(); err != nil {
		t.Errorf("VerifyData: %v", err)
	}
	if diff := cmp.Diff(s.procs, got.Processes); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// A reader that holds less than the size it is given is a truncated
	// image, not an I/O error.
	for _, have := range []int{100, 4000, len(img) - 100, len(img) - 1} {
		if _, err := Decode(eofReaderAt(img[:have]), int64(len(img))); !errors.Is(err, ErrTruncated) {
			t.Errorf("%d of %d bytes: %v, want ErrTruncated", have, len(img), err)
		}
	}
	// A size beyond the end marker is a malformed image; the reader does
	// not read past the marker.
	if _, err := Decode(eofReaderAt(img), int64(len(img))+4096); !errors.Is(err, ErrCorrupt) {
		t.Errorf("size beyond the end marker: %v, want ErrCorrupt", err)
	}
	if _, err := Decode(eofReaderAt(img[:10]), 16); !errors.Is(err, ErrTruncated) {
		t.Errorf("10 bytes claimed as 16: %v, want ErrTruncated", err)
	}
	if _, err := Decode(eofReaderAt(img), -1); !errors.Is(err, ErrTruncated) {
		t.Errorf("negative size: %v, want ErrTruncated", err)
	}

	// A zero-length section ending exactly at the end of the file (found by
	// FuzzDecode: bytes.Reader returns io.EOF for the empty read, which came
	// out as a bare "EOF" error). Its empty JSON is malformed.
	cut := assemble(Version, []sec{{typ: SecHeader, flags: FlagCritical}})
	if _, err := decodeBytes(cut); !errors.Is(err, ErrCorrupt) {
		t.Errorf("empty header section at the end: %v, want ErrCorrupt", err)
	}
}

// TestDataShrinks: an image whose file is cut after Open fails VerifyData
// with ErrTruncated.
func TestDataShrinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	s := makeSample(1, true)
	s.write(t, path)
	img, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if err := os.Truncate(path, img.DataFileOffset()+100); err != nil {
		t.Fatal(err)
	}
	if err := img.VerifyData(); !errors.Is(err, ErrTruncated) {
		t.Errorf("VerifyData of a cut file: %v, want ErrTruncated", err)
	}
}

func ptrTo[T any](v T) *T { return &v }
