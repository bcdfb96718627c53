package format

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// seedImages are small images made by the Writer. They are checked in as
// testdata/fuzz/FuzzDecode/seed-* (go test -run TestWriteFuzzCorpus
// -write-corpus ./pkg/format rewrites them) and also added by FuzzDecode
// itself, so the seeds follow the writer.
func seedImages(t testing.TB) map[string][]byte {
	t.Helper()
	tiny := func(pid int) *Process {
		return &Process{
			PID: pid, PPID: 1, Comm: "tiny", Exe: "/bin/tiny", Cwd: "/", Root: "/",
			Threads: []Thread{{TID: pid, Regs: Regs{Rip: 0x401000, Rsp: 0x7ffc00000ff0}, XSave: []byte{1, 2, 3, 4}}},
			VMAs:    []VMA{{Start: 0x7ffd00000000, End: 0x7ffd00002000, Prot: ProtRead | ProtExec, Kind: VMAVDSO, Name: "[vdso]"}},
		}
	}
	out := map[string][]byte{}
	write := func(name string, objs *Objects, procs []*Process, data []byte) {
		path := filepath.Join(t.TempDir(), name)
		if err := writeImage(path, sampleHeader(len(procs), len(data)), objs, procs, data, 512); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	write("seed-minimal", nil, []*Process{tiny(10)}, nil)

	// One page of memory and a deleted file of 10 bytes.
	p := tiny(20)
	p.VMAs = append([]VMA{{Start: 0x600000, End: 0x602000, Prot: ProtRead | ProtWrite, Kind: VMAAnon, Name: "[heap]",
		Pages: []DataRun{{Addr: 0x601000, Off: 0, Len: 4096}}}}, p.VMAs...)
	p.Files = []File{
		{FD: 0, Desc: 1, Kind: FileChar, Path: "/dev/null"},
		{FD: 3, Desc: 2, Kind: FileDeleted, Path: "/tmp/x (deleted)", Mode: 0o100600, Content: []DataRun{{Addr: 0, Off: 4096, Len: 10}}},
	}
	data := make([]byte, 4096+10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	write("seed-one-page", nil, []*Process{p}, data)

	// Two processes and a zombie sharing a file mapping, a shared memory
	// object, a pipe with unread bytes and a deleted file's description.
	a, b := tiny(30), tiny(31)
	b.PPID = 30
	shm := VMA{Start: 0x7f0000000000, End: 0x7f0000001000, Prot: ProtRead | ProtWrite, Shared: true, Kind: VMASharedAnon, Name: "/dev/zero (deleted)", Shm: 1}
	a.VMAs = append([]VMA{shm}, a.VMAs...)
	b.VMAs = append([]VMA{{Start: 0x400000, End: 0x401000, Prot: ProtRead | ProtExec, Kind: VMAFile, Name: "/bin/tiny",
		File: &FileRef{Path: "/bin/tiny", Dev: 1, Inode: 2, Size: 4096, MtimeNS: 3}}, shm}, b.VMAs...)
	a.Files = []File{{FD: 1, Desc: 2, Kind: FilePipe, Path: "pipe:[9]", Flags: 1, Pipe: 1}}
	b.Files = []File{
		{FD: 0, Desc: 1, Kind: FilePipe, Path: "pipe:[9]", Pipe: 1},
		{FD: 5, Desc: 3, Kind: FileDeleted, Path: "/tmp/y (deleted)", Content: []DataRun{{Addr: 4096, Off: 0, Len: 5}}},
	}
	z := &Process{PID: 32, PPID: 30, Zombie: true, WaitStatus: 0x100}
	objs := &Objects{
		Shm:   []SharedMem{{ID: 1, Inode: 8, Size: 4096, Pages: []DataRun{{Addr: 0, Off: 8, Len: 100}}}},
		Pipes: []Pipe{{ID: 1, Inode: 9, Capacity: 65536, Data: []DataRun{{Off: 5, Len: 3}}}},
	}
	write("seed-two-procs", objs, []*Process{a, b, z}, append([]byte("helloabc"), bytes.Repeat([]byte{0xcc}, 100)...))

	// UNIX sockets: a pair with unread bytes, a listener with a waiting
	// connection, a datagram socket with messages from a named sender.
	u := tiny(40)
	u.Files = []File{
		{FD: 3, Desc: 1, Kind: FileUnix, Path: "socket:[1]", Socket: 1},
		{FD: 4, Desc: 2, Kind: FileUnix, Path: "socket:[2]", Socket: 2},
		{FD: 5, Desc: 3, Kind: FileUnix, Path: "socket:[3]", Socket: 3},
		{FD: 6, Desc: 4, Kind: FileUnix, Path: "socket:[4]", Socket: 4},
		{FD: 7, Desc: 5, Kind: FileUnix, Path: "socket:[5]", Socket: 5},
		{FD: 8, Desc: 6, Kind: FileUnix, Path: "socket:[6]", Socket: 6},
	}
	uobjs := &Objects{UnixSockets: []UnixSocket{
		{ID: 1, Inode: 1, Type: 1, Peer: 2, Queue: []DataRun{{Off: 0, Len: 3}}, Options: UnixOptions{PeekOff: -1}},
		{ID: 2, Inode: 2, Type: 1, Peer: 1, Shutdown: 2},
		{ID: 3, Inode: 3, Type: 1, Name: "/tmp/l", Mode: 0o640, Listening: true, Backlog: 5, Pending: []int{4}},
		{ID: 4, Inode: 4, Type: 1},
		{ID: 5, Inode: 5, Type: 2, Name: "g", Abstract: true, Queue: []DataRun{{Off: 3, Len: 5}},
			Messages: []UnixMessage{{Len: 2, Sender: 6}, {Len: 3}}},
		{ID: 6, Inode: 6, Type: 2, Name: "/tmp/s", Unlinked: true, Peer: 5},
	}}
	write("seed-unix-sockets", uobjs, []*Process{u}, []byte("abcdefgh"))

	// Timers (version 3): interval and POSIX timers, a timerfd.
	tm := tiny(50)
	tm.ITimers = []ITimer{{Which: ITimerReal, ValueNS: 1e8, IntervalNS: 1e8}}
	tm.PosixTimers = []PosixTimer{{ID: 0, Clock: ClockRealtime, Notify: SigevSignal, Signal: 34, Sival: 1, ValueNS: 1e9, AbsNS: 1.7e18},
		{ID: 2, Clock: ClockMonotonic, Notify: SigevNone}}
	tm.Files = []File{{FD: 3, Desc: 1, Kind: FileTimerfd, Path: "anon_inode:[timerfd]", Timerfd: &Timerfd{Clock: ClockMonotonic, ValueNS: 5, IntervalNS: 10, Ticks: 2}}}
	write("seed-timers", nil, []*Process{tm}, nil)
	// Version 3: System V objects (a segment attached twice, a semaphore
	// set with an adjustment, a queue with two messages) and a signalfd.
	v := tiny(50)
	v.VMAs = append([]VMA{
		{Start: 0x10000000000, End: 0x10000001000, Prot: ProtRead | ProtWrite, Shared: true, Kind: VMASysVShm, Name: "/SYSV00001234 (deleted)", SysVShm: 1},
		{Start: 0x10000100000, End: 0x10000101000, Prot: ProtRead, Shared: true, Kind: VMASysVShm, Name: "/SYSV00001234 (deleted)", SysVShm: 1, SysVFlags: 0o10000},
	}, v.VMAs...)
	v.Files = []File{{FD: 3, Desc: 1, Kind: FileSignalfd, Path: "anon_inode:[signalfd]", Flags: 0o2004000, SigMask: 1 << 9}}
	v.SemUndo = []SemUndo{{KID: 7, Num: 1, Adj: -3}}
	sv := &Objects{SysV: &SysVObjects{
		Shm: []SysVShm{{ID: 1, SysVPerm: SysVPerm{Key: 0x1234, KID: 5, Mode: 0o600}, Size: 4096, Pages: []DataRun{{Addr: 0, Off: 0, Len: 8}}, CPID: 50, LPID: 50}},
		Sem: []SysVSem{{ID: 1, SysVPerm: SysVPerm{Key: 0x1235, KID: 7, Mode: 0o600}, Values: []uint16{1, 5}, PIDs: []int{50, 0}}},
		Msg: []SysVMsgQueue{{ID: 1, SysVPerm: SysVPerm{KID: 2, Mode: 0o620}, QBytes: 16384, LSPID: 50,
			Messages: []SysVMessage{{Type: 1, Text: DataRun{Off: 8, Len: 3}}, {Type: 9, Text: DataRun{Off: 11}}}}},
	}}
	write("seed-sysv", sv, []*Process{v}, []byte("segmentmsg!"))
	// Terminals: a pty pair of the tree, the session's controlling
	// terminal, and an outside terminal.
	tt := tiny(50)
	tt.SID, tt.PGID, tt.CTTY = 50, 50, 1
	tt.Files = []File{
		{FD: 0, Desc: 1, Kind: FilePTYSlave, Path: "/dev/pts/3", Flags: 2, TTY: 1},
		{FD: 3, Desc: 2, Kind: FilePTYMaster, Path: "/dev/ptmx", Flags: 2, TTY: 1},
	}
	tobjs := &Objects{TTYs: []TTY{
		{ID: 1, Kind: TTYPty, Index: 3, Name: "/dev/pts/3", Termios: &Termios{Iflag: 0x500, Oflag: 5, Cflag: 0xbf, Lflag: 0x8a3b},
			Winsize: Winsize{Row: 40, Col: 120}, Packet: true, Exclusive: true, Session: 50, Foreground: 50},
		{ID: 2, Kind: TTYOutside, Name: "/dev/pts/0", Locked: true},
	}}
	write("seed-terminals", tobjs, []*Process{tt}, nil)
	// Version 3: the one-page image compressed, streamed (trailer) and
	// both, with chunks small enough for several of them.
	more := bytes.Repeat([]byte("page"), 5000)
	data = append(data, more...)
	for _, m := range writeModes[1:] {
		out["seed-"+m.name] = writeWith(t, m, sampleHeader(1, len(data)), nil, []*Process{p}, data, 3000)
	}
	// A portable image (--embed-files): the executable's mapping names
	// its copy, whose 6 bytes follow the page of written data.
	em := tiny(60)
	em.VMAs = append([]VMA{{Start: 0x400000, End: 0x402000, Prot: ProtRead | ProtWrite, Kind: VMAFile, Name: "/bin/tiny",
		File:  &FileRef{Path: "/bin/tiny", Dev: 8, Inode: 77, Size: 6, MtimeNS: 1, Embedded: 1},
		Pages: []DataRun{{Addr: 0x401000, Off: 0, Len: 4096}}}}, em.VMAs...)
	eobjs := &Objects{Embedded: []EmbeddedFile{{ID: 1, Path: "/bin/tiny", Dev: 8, Inode: 77, Size: 6, MtimeNS: 1, Mode: 0o755,
		Content: []DataRun{{Addr: 0, Off: 4096, Len: 6}}}}}
	write("seed-embedded", eobjs, []*Process{em}, append(make([]byte, 4096), "\x7fELF\x02\x01"...))
	return out
}

var writeCorpus = flag.Bool("write-corpus", false, "rewrite the seed files in testdata/fuzz/FuzzDecode")

// TestWriteFuzzCorpus rewrites the checked-in seed corpus when run with
// -write-corpus. The seeds need not match the writer byte for byte (FuzzDecode
// adds fresh ones itself); TestFuzzCorpusSeeds checks they still decode.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("run with -write-corpus to rewrite testdata/fuzz/FuzzDecode/seed-*")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seedImages(t) {
		enc := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), enc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to Decode: it must never panic, every
// refusal must wrap one of the package's errors, and an accepted image must
// hold together (checkAccepted).
func FuzzDecode(f *testing.F) {
	for _, b := range seedImages(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := decodeBytes(b)
		if err != nil {
			if img != nil {
				t.Fatalf("Decode returned an image and %v", err)
			}
			if !isOneOf(err, allErrs...) {
				t.Fatalf("error wraps none of the package errors: %v", err)
			}
			return
		}
		checkAccepted(t, img, b)
	})
}

// FuzzDecodeRecords fuzzes the JSON of the header, the objects and one
// process inside an otherwise well-formed image with correct checksums, so
// that the fuzzer reaches the record validation that FuzzDecode rarely gets
// past the CRCs to. An empty objects argument leaves the section out.
func FuzzDecodeRecords(f *testing.F) {
	s := buildSample(sampleOpts{nproc: 1, small: true, objects: true})
	h, _ := json.Marshal(s.h)
	o, _ := json.Marshal(s.objs)
	p, _ := json.Marshal(s.procs[0])
	f.Add(h, o, p, uint16(len(s.data)))
	for name, b := range seedImages(f) {
		if strings.Contains(name, "zstd") || strings.Contains(name, "stream") {
			continue // records fuzzed here sit in a plain image
		}
		var hdr, objs, proc []byte
		var n uint64
		for _, sc := range parseSections(f, b) {
			payload := b[sc.payloadOff():][:sc.length]
			switch {
			case sc.typ == SecHeader:
				hdr = payload
			case sc.typ == SecObjects:
				objs = payload
			case sc.typ == SecProcess && proc == nil:
				proc = payload
			case sc.typ == SecData:
				n = sc.length
			}
		}
		f.Add(hdr, objs, proc, uint16(n))
	}
	f.Fuzz(func(t *testing.T, hdr, objs, proc []byte, n uint16) {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i)
		}
		secs := []sec{{typ: SecHeader, flags: FlagCritical, payload: hdr}}
		if len(objs) > 0 {
			secs = append(secs, sec{typ: SecObjects, flags: FlagCritical, payload: objs})
		}
		b := assemble(1, append(secs,
			sec{typ: SecProcess, flags: FlagCritical, payload: proc},
			sec{typ: SecPad, autoPad: true},
			sec{typ: SecData, flags: FlagCritical, payload: data},
			sec{typ: SecEnd, flags: FlagCritical, autoEnd: true},
		))
		img, err := decodeBytes(b)
		if err != nil {
			if img != nil || !isOneOf(err, allErrs...) {
				t.Fatalf("Decode: image %v, error %v", img != nil, err)
			}
			return
		}
		checkAccepted(t, img, b)
	})
}

// checkAccepted re-checks, without the package's validation code, what
// restore relies on in an image Decode accepted, then writes it again and
// reads it back.
func checkAccepted(t *testing.T, img *Image, b []byte) {
	t.Helper()
	off, n := img.DataFileOffset(), img.Data().Size()
	if off%4096 != 0 || off < 16+3*24 || n < 0 || off+n > int64(len(b)) {
		t.Fatalf("data section %d+%d in a %d-byte file", off, n, len(b))
	}
	if img.Compressed() || img.Streamed() {
		checkAcceptedV3(t, img, b)
		return
	}
	if img.Header.DataBytes != n {
		t.Fatalf("header says %d data bytes, section has %d", img.Header.DataBytes, n)
	}
	if len(img.Processes) == 0 || len(img.Processes) != img.Header.Processes {
		t.Fatalf("%d processes, header says %d", len(img.Processes), img.Header.Processes)
	}
	inData := func(where string, r DataRun) {
		end, carry := bits.Add64(r.Off, r.Len, 0)
		if carry != 0 || end > uint64(n) {
			t.Fatalf("%s: run %+v beyond the %d-byte data section", where, r, n)
		}
		buf := make([]byte, r.Len)
		if k, err := img.Data().ReadAt(buf, int64(r.Off)); k != len(buf) {
			t.Fatalf("%s: read run %+v: %d bytes, %v", where, r, k, err)
		}
		if !bytes.Equal(buf, b[off+int64(r.Off):off+int64(end)]) {
			t.Fatalf("%s: run %+v reads other bytes than the file holds", where, r)
		}
	}
	for _, p := range img.Processes {
		if p == nil {
			t.Fatal("nil process")
		}
		for _, v := range p.VMAs {
			if v.Start%4096 != 0 || v.End%4096 != 0 || v.Start >= v.End {
				t.Fatalf("pid %d: bad memory area %#x-%#x", p.PID, v.Start, v.End)
			}
			for _, r := range v.Pages {
				where := fmt.Sprintf("pid %d vma %#x-%#x", p.PID, v.Start, v.End)
				end, carry := bits.Add64(r.Addr, r.Len, 0)
				if carry != 0 || r.Addr < v.Start || end > v.End || r.Len == 0 || r.Len%4096 != 0 {
					t.Fatalf("%s: page run %+v outside the area", where, r)
				}
				inData(where, r)
			}
		}
		for _, f := range p.Files {
			for _, r := range f.Content {
				inData(fmt.Sprintf("pid %d fd %d", p.PID, f.FD), r)
			}
		}
	}
	shm, pipes := map[int]bool{}, map[int]bool{}
	for _, m := range img.Objects.Shm {
		shm[m.ID] = true
		for _, r := range m.Pages {
			if end, carry := bits.Add64(r.Addr, r.Len, 0); carry != 0 || end > m.Size {
				t.Fatalf("shm %d: run %+v beyond its %d bytes", m.ID, r, m.Size)
			}
			inData(fmt.Sprintf("shm %d", m.ID), r)
		}
	}
	for _, p := range img.Objects.Pipes {
		pipes[p.ID] = true
		for _, r := range p.Data {
			if end, carry := bits.Add64(r.Addr, r.Len, 0); carry != 0 || end > uint64(p.Capacity) {
				t.Fatalf("pipe %d: run %+v beyond its capacity %d", p.ID, r, p.Capacity)
			}
			inData(fmt.Sprintf("pipe %d", p.ID), r)
		}
	}
	for _, p := range img.Processes {
		for _, v := range p.VMAs {
			if v.Shm != 0 && !shm[v.Shm] {
				t.Fatalf("pid %d: vma %#x names missing shm %d", p.PID, v.Start, v.Shm)
			}
		}
		for _, f := range p.Files {
			if f.Pipe != 0 && !pipes[f.Pipe] || f.Kind == FilePipe && f.Pipe == 0 {
				t.Fatalf("pid %d: fd %d (%s) names missing pipe %d", p.PID, f.FD, f.Kind, f.Pipe)
			}
		}
	}
	// No byte of the data section goes to two places.
	var spans [][2]uint64
	collect := func(rs []DataRun) {
		for _, r := range rs {
			if r.Len > 0 {
				spans = append(spans, [2]uint64{r.Off, r.Off + r.Len})
			}
		}
	}
	for _, p := range img.Processes {
		for _, v := range p.VMAs {
			collect(v.Pages)
		}
		for _, f := range p.Files {
			collect(f.Content)
		}
	}
	for _, m := range img.Objects.Shm {
		collect(m.Pages)
	}
	for _, p := range img.Objects.Pipes {
		collect(p.Data)
	}
	for i, a := range spans {
		for _, c := range spans[i+1:] {
			if a[0] < c[1] && c[0] < a[1] {
				t.Fatalf("data runs %v and %v overlap", a, c)
			}
		}
	}

	crc := Checksum(0, b[off:off+n])
	if crc != img.DataCRC() {
		if err := img.VerifyData(); !errors.Is(err, ErrChecksum) {
			t.Fatalf("data CRC %#x, section says %#x, VerifyData: %v", crc, img.DataCRC(), err)
		}
		return
	}
	if err := img.VerifyData(); err != nil {
		t.Fatalf("VerifyData: %v", err)
	}

	// What the reader accepts, the writer writes and the reader reads back
	// unchanged.
	path := filepath.Join(t.TempDir(), "again")
	if err := writeImage(path, &img.Header, &img.Objects, img.Processes, b[off:off+n], 4096); err != nil {
		t.Fatalf("write accepted image again: %v", err)
	}
	again, err := Open(path)
	if err != nil {
		t.Fatalf("read rewritten image: %v", err)
	}
	defer again.Close()
	if diff := cmp.Diff(img.Header, again.Header); diff != "" {
		t.Fatalf("rewritten header (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(img.Processes, again.Processes); diff != "" {
		t.Fatalf("rewritten processes (-want +got):\n%s", diff)
	}
}

// checkAcceptedV3 checks an accepted compressed or streamed image: its
// data reads the same as a file and as a stream (or is refused the same
// way by both), and the stream reader accepts what Decode accepts.
func checkAcceptedV3(t *testing.T, img *Image, b []byte) {
	fileData, ferr := io.ReadAll(img.DataStream())
	simg, err := ReadStream(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Decode accepts the image, ReadStream refuses it: %v", err)
	}
	streamData, serr := io.ReadAll(simg.DataStream())
	if (ferr == nil) != (serr == nil) {
		t.Fatalf("data as a file: %v; as a stream: %v", ferr, serr)
	}
	if ferr != nil {
		if !isOneOf(ferr, allErrs...) || !isOneOf(serr, allErrs...) {
			t.Fatalf("data errors wrap none of the package errors: %v / %v", ferr, serr)
		}
		return
	}
	if !bytes.Equal(fileData, streamData) || int64(len(fileData)) != img.Header.DataBytes {
		t.Fatalf("data: %d bytes as a file, %d as a stream, header says %d", len(fileData), len(streamData), img.Header.DataBytes)
	}
	var all []DataRun
	for _, p := range img.Processes {
		for _, v := range p.VMAs {
			all = append(all, v.Pages...)
		}
		for _, f := range p.Files {
			all = append(all, f.Content...)
		}
	}
	for _, r := range all {
		if end, carry := bits.Add64(r.Off, r.Len, 0); carry != 0 || end > uint64(len(fileData)) {
			t.Fatalf("run %+v beyond the %d data bytes", r, len(fileData))
		}
	}
	// Written again in the same mode, it reads back the same.
	m := writeMode{stream: img.Streamed(), compress: img.Compressed()}
	again := writeWith(t, m, &img.Header, &img.Objects, img.Processes, fileData, 4096)
	d2, _, aimg, _ := readBoth(t, again)
	if !bytes.Equal(d2, fileData) || cmp.Diff(img.Processes, aimg.Processes) != "" {
		t.Fatal("the rewritten image reads back differently")
	}
}

// FuzzReadStream feeds arbitrary bytes to ReadStream and reads the data
// as restore - does: no panic, refusals wrap the package's errors, and a
// stream accepted to its end is an image Decode accepts with the same data.
func FuzzReadStream(f *testing.F) {
	for _, b := range seedImages(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := ReadStream(bytes.NewReader(b))
		if err != nil {
			if img != nil || !isOneOf(err, allErrs...) {
				t.Fatalf("ReadStream: image %v, error %v", img != nil, err)
			}
			return
		}
		data, err := io.ReadAll(img.DataStream())
		if err != nil {
			if !isOneOf(err, allErrs...) {
				t.Fatalf("data error wraps none of the package errors: %v", err)
			}
			return
		}
		fimg, err := decodeBytes(b)
		if err != nil {
			t.Fatalf("ReadStream accepts the image to its end, Decode refuses it: %v", err)
		}
		fdata, err := io.ReadAll(fimg.DataStream())
		if err != nil || !bytes.Equal(data, fdata) {
			t.Fatalf("data: %d bytes as a stream, as a file %d bytes (%v)", len(data), len(fdata), err)
		}
	})
}

// TestFuzzCorpusSeeds: the checked-in seeds are valid images, so that the
// fuzzer starts from something the reader accepts; any other file there is
// a crasher kept as a regression test and must be refused cleanly.
func TestFuzzCorpusSeeds(t *testing.T) {
	ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzDecode"))
	if err != nil {
		t.Fatal(err)
	}
	seeds := 0
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzDecode", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		b := parseCorpusBytes(t, e.Name(), raw)
		_, err = decodeBytes(b)
		if strings.HasPrefix(e.Name(), "seed-") {
			seeds++
			if err != nil {
				t.Errorf("seed %s: %v", e.Name(), err)
			}
		} else if err != nil && !isOneOf(err, allErrs...) {
			t.Errorf("%s: %v wraps none of the package errors", e.Name(), err)
		}
	}
	if seeds < 3 {
		t.Errorf("%d seed files, want at least 3", seeds)
	}
}

// parseCorpusBytes decodes a one-value "go test fuzz v1" file.
func parseCorpusBytes(t *testing.T, name string, raw []byte) []byte {
	t.Helper()
	lines := strings.SplitN(strings.TrimRight(string(raw), "\n"), "\n", 2)
	if len(lines) != 2 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a one-value corpus file", name)
	}
	v := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
	var s string
	if _, err := fmt.Sscanf(v, "%q", &s); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return []byte(s)
}
