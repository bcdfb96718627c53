package format

import "time"

// Header describes the whole image. It is the first section of every file.
type Header struct {
	Arch      string    `json:"arch"`       // GOARCH-style name of the machine: "amd64"
	Kernel    string    `json:"kernel"`     // uname -r of the dumping machine
	Created   time.Time `json:"created"`    // when the checkpoint was taken
	Processes int       `json:"processes"`  // number of Process sections that follow
	Tool      string    `json:"tool"`       // chpox version that wrote the image
	PageSize  int       `json:"page_size"`  // bytes per page on the dumping machine
	Hostname  string    `json:"hostname"`   // informational
	DataBytes int64     `json:"data_bytes"` // length of the data section
}

// Process is everything chpox knows about one process, except page contents,
// which live in the data section and are referenced by DataRun.
type Process struct {
	PID     int      `json:"pid"`
	PPID    int      `json:"ppid"`
	PGID    int      `json:"pgid"`
	SID     int      `json:"sid"`
	Comm    string   `json:"comm"`
	Exe     string   `json:"exe"`
	Cmdline []string `json:"cmdline,omitempty"` // informational; argv lives in memory
	Cwd     string   `json:"cwd"`
	Root    string   `json:"root"`

	Creds       Creds       `json:"creds"`
	Umask       uint32      `json:"umask"`
	Personality uint32      `json:"personality"`
	Rlimits     []Rlimit    `json:"rlimits"`
	MM          MM          `json:"mm"`
	Auxv        []byte      `json:"auxv"`
	Sigactions  []Sigaction `json:"sigactions,omitempty"` // only signals whose action is not SIG_DFL
	// SharedPending holds process-wide pending signals as raw 128-byte siginfo.
	SharedPending [][]byte `json:"shared_pending,omitempty"`

	Threads []Thread `json:"threads"`
	VMAs    []VMA    `json:"vmas"`
	Files   []File   `json:"files"`

	// Zombie processes have exited and wait for their parent to reap them;
	// they hold no memory or files. WaitStatus is what wait(2) will report.
	Zombie     bool `json:"zombie,omitempty"`
	WaitStatus int  `json:"wait_status,omitempty"`
	// Stopped processes were in a job-control stop (SIGSTOP, Ctrl-Z) and
	// come back stopped.
	Stopped bool `json:"stopped,omitempty"`

	// Terminal (version 3): CTTY is the ID in Objects.TTYs of the
	// session's controlling terminal, 0 for none.
	CTTY int `json:"ctty,omitempty"`
}

// Objects holds what several processes (or fds) may share: pipes, shared
// memory, sockets, and descriptors shared with processes outside the
// checkpoint. Process records refer to them by ID (IDs start at 1).
type Objects struct {
	Pipes       []Pipe          `json:"pipes,omitempty"`
	Shm         []SharedMem     `json:"shm,omitempty"`
	UnixSockets []UnixSocket    `json:"unix_sockets,omitempty"`
	InetSockets []InetSocket    `json:"inet_sockets,omitempty"`
	Netlink     []NetlinkSocket `json:"netlink_sockets,omitempty"`
	Externals   []External      `json:"externals,omitempty"`
	// Terminals (version 3): pty pairs and outside controlling terminals.
	TTYs []TTY `json:"ttys,omitempty"`
}

// Pipe is one pipe or FIFO with the bytes written to it and not yet read.
type Pipe struct {
	ID       int       `json:"id"`
	Inode    uint64    `json:"inode"`
	Capacity int       `json:"capacity"`       // F_GETPIPE_SZ
	FIFO     string    `json:"fifo,omitempty"` // path of a named FIFO
	Data     []DataRun `json:"data,omitempty"` // unread bytes; Addr is 0
}

// SharedMem is shared memory (MAP_SHARED|MAP_ANONYMOUS, /dev/zero, memfd)
// saved once however many processes map it. Pages' Addr is the offset in
// the object.
type SharedMem struct {
	ID    int       `json:"id"`
	Inode uint64    `json:"inode"`
	Size  uint64    `json:"size"`
	Pages []DataRun `json:"pages,omitempty"`
}

// Creds are the process credentials: real, effective, saved and fs ids.
type Creds struct {
	UID    [4]uint32 `json:"uid"`
	GID    [4]uint32 `json:"gid"`
	Groups []uint32  `json:"groups,omitempty"`
	// Capability sets as bit masks (/proc/PID/status); restore never
	// gives the process more than these.
	CapInh uint64 `json:"cap_inh"`
	CapPrm uint64 `json:"cap_prm"`
	CapEff uint64 `json:"cap_eff"`
	CapBnd uint64 `json:"cap_bnd"`
	CapAmb uint64 `json:"cap_amb"`
	// NoNewPrivs is prctl(PR_SET_NO_NEW_PRIVS).
	NoNewPrivs bool `json:"no_new_privs,omitempty"`
	// Dumpable is prctl(PR_GET_DUMPABLE): 0, 1, or 2 (suid_dumpable).
	// Changing ids at restore resets it (kernel/cred.c, commit_creds), so
	// a process that ran as its own user would come back not dumpable: its
	// /proc files root's, no core, no ptrace by that user. Nil in images
	// that predate it: restore then leaves what the ids made it.
	Dumpable *uint8 `json:"dumpable,omitempty"`
}

// Rlimit is one resource limit (RLIMIT_* number).
type Rlimit struct {
	Resource int    `json:"resource"`
	Cur      uint64 `json:"cur"`
	Max      uint64 `json:"max"`
}

// MM holds the mm_struct fields that prctl(PR_SET_MM_MAP) restores.
type MM struct {
	StartCode  uint64 `json:"start_code"`
	EndCode    uint64 `json:"end_code"`
	StartData  uint64 `json:"start_data"`
	EndData    uint64 `json:"end_data"`
	StartBrk   uint64 `json:"start_brk"`
	Brk        uint64 `json:"brk"`
	StartStack uint64 `json:"start_stack"`
	ArgStart   uint64 `json:"arg_start"`
	ArgEnd     uint64 `json:"arg_end"`
	EnvStart   uint64 `json:"env_start"`
	EnvEnd     uint64 `json:"env_end"`
}

// Sigaction is a kernel struct sigaction (x86_64 layout) for one signal.
type Sigaction struct {
	Signal   int    `json:"signal"`
	Handler  uint64 `json:"handler"`
	Flags    uint64 `json:"flags"`
	Restorer uint64 `json:"restorer"`
	Mask     uint64 `json:"mask"`
}

// Thread is the CPU and signal state of one thread.
type Thread struct {
	TID      int      `json:"tid"`
	Regs     Regs     `json:"regs"`
	XSave    []byte   `json:"xsave"` // NT_X86_XSTATE regset, as the kernel gave it
	SigMask  uint64   `json:"sigmask"`
	Pending  [][]byte `json:"pending,omitempty"` // thread-private pending siginfo, 128 bytes each
	AltStack AltStack `json:"altstack"`
	Rseq     *Rseq    `json:"rseq,omitempty"`
	Comm     string   `json:"comm,omitempty"` // the thread's own name
	// ClearTID is set_tid_address(2)'s pointer: the kernel clears it and
	// wakes futex waiters when the thread exits (pthread_join relies on it).
	ClearTID uint64 `json:"clear_tid,omitempty"`
	// RobustList is the thread's robust futex list (set_robust_list(2)).
	RobustHead uint64 `json:"robust_head,omitempty"`
	RobustLen  uint64 `json:"robust_len,omitempty"`
}

// Regs mirrors the x86_64 user_regs_struct. It is kept here, not taken from
// x/sys/unix, so that images can be read on any platform.
type Regs struct {
	R15, R14, R13, R12, Rbp, Rbx, R11, R10 uint64
	R9, R8, Rax, Rcx, Rdx, Rsi, Rdi        uint64
	OrigRax, Rip, Cs, Eflags, Rsp, Ss      uint64
	FsBase, GsBase, Ds, Es, Fs, Gs         uint64
}

// AltStack is a stack_t as sigaltstack(2) reports it.
type AltStack struct {
	SP    uint64 `json:"sp"`
	Flags int32  `json:"flags"`
	Size  uint64 `json:"size"`
}

// Rseq is a thread's restartable-sequences registration.
type Rseq struct {
	Addr  uint64 `json:"addr"`
	Len   uint32 `json:"len"`
	Flags uint32 `json:"flags"`
	Sig   uint32 `json:"sig"`
}

// VMA kinds.
const (
	VMAAnon       = "anon"        // private anonymous memory: heap, stack, mmap
	VMASharedAnon = "shared-anon" // MAP_SHARED|MAP_ANONYMOUS, /dev/zero, memfd
	VMAFile       = "file"        // file mapping; private pages that were written are in Pages
	VMAVDSO       = "vdso"        // [vvar], [vvar_vclock], [vdso]: moved, never copied
)

// Protection bits, as in mmap(2).
const (
	ProtRead  = 1
	ProtWrite = 2
	ProtExec  = 4
)

// VMA is one memory area of /proc/PID/maps.
type VMA struct {
	Start     uint64    `json:"start"`
	End       uint64    `json:"end"`
	Prot      int       `json:"prot"`
	Shared    bool      `json:"shared"`
	GrowsDown bool      `json:"grows_down,omitempty"`
	Kind      string    `json:"kind"`
	Name      string    `json:"name,omitempty"` // [heap], [stack], [vdso], file path ...
	File      *FileRef  `json:"file,omitempty"`
	Offset    uint64    `json:"offset,omitempty"` // file offset of Start
	Pages     []DataRun `json:"pages,omitempty"`
	Shm       int       `json:"shm,omitempty"` // shared-anon: ID in Objects.Shm
}

// DataRun is a run of bytes in the data section: for memory, Len bytes
// destined for address Addr; for file contents, Addr is the file offset.
type DataRun struct {
	Addr uint64 `json:"addr"`
	Off  uint64 `json:"off"` // offset within the data section
	Len  uint64 `json:"len"`
}

// FileRef identifies a file on disk so restore can tell whether it changed.
type FileRef struct {
	Path    string `json:"path"`
	Dev     uint64 `json:"dev"`
	Inode   uint64 `json:"inode"`
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
}

// File kinds.
const (
	FileRegular = "file"    // regular file, reopened by path
	FileDir     = "dir"     // directory, reopened by path
	FileChar    = "chardev" // character device (/dev/null, a tty), reopened by path
	FileDeleted = "deleted" // unlinked regular file; content is in the data section
	FilePipe    = "pipe"    // end of a pipe or FIFO in Objects.Pipes
	FileEventfd = "eventfd" // eventfd(2): Count, Semaphore
	FileEpoll   = "epoll"   // epoll instance: Watches
	// FileUnix is a UNIX domain socket: Socket is its ID in
	// Objects.UnixSockets.
	FileUnix = "unix"
	// FileInet is a TCP or UDP socket over IPv4 or IPv6: Socket is its ID
	// in Objects.InetSockets.
	FileInet = "inet"
	// FileNetlink is a netlink socket: Socket is its ID in
	// Objects.Netlink.
	FileNetlink = "netlink"
	// FileExternal is a descriptor whose object lives on outside the
	// checkpoint (a pipe to a process that is not dumped, a connection to
	// an outside server): External is its ID in Objects.Externals.
	FileExternal = "external"
	// FilePTYMaster and FilePTYSlave (version 3) are the ends of a
	// pseudo-terminal pair whose master is in the tree: TTY is its ID in
	// Objects.TTYs.
	FilePTYMaster = "pty-master"
	FilePTYSlave  = "pty-slave"
)

// EpollWatch is one fd an epoll instance watches, as epoll_ctl added it.
type EpollWatch struct {
	FD     int    `json:"fd"`
	Events uint32 `json:"events"`
	Data   uint64 `json:"data"`
}

// File is one open file descriptor.
type File struct {
	FD int `json:"fd"`
	// Desc identifies the open file description: fds with the same Desc,
	// in one process or several, share one offset and one set of flags.
	Desc     int       `json:"desc"`
	Pipe     int       `json:"pipe,omitempty"`     // kind pipe: ID in Objects.Pipes
	Socket   int       `json:"socket,omitempty"`   // kind unix or inet: ID in Objects.UnixSockets or InetSockets
	External int       `json:"external,omitempty"` // kind external: ID in Objects.Externals
	TTY      int       `json:"tty,omitempty"`      // kinds pty-master, pty-slave (version 3): ID in Objects.TTYs
	Kind     string    `json:"kind"`
	Path     string    `json:"path"`
	Flags    int       `json:"flags"` // open(2) flags from fdinfo, O_CLOEXEC included
	Pos      int64     `json:"pos"`
	Mode     uint32    `json:"mode"` // st_mode, for deleted files
	Content  []DataRun `json:"content,omitempty"`

	Count     uint64       `json:"count,omitempty"`     // eventfd counter
	Semaphore bool         `json:"semaphore,omitempty"` // eventfd EFD_SEMAPHORE
	Watches   []EpollWatch `json:"watches,omitempty"`   // epoll
}
