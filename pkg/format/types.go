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
	// CPUFlags are the instruction-set flags of the dumping CPU
	// (/proc/cpuinfo; version 3, optional): the processes may have chosen
	// code by them, so restore needs a CPU with all of them.
	CPUFlags []string `json:"cpu_flags,omitempty"`
	// VDSO names the kernel's vDSO code (version 3, optional): a SHA-256
	// of its ELF content. Restore needs the same (programs keep pointers
	// into it).
	VDSO string `json:"vdso,omitempty"`
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
	// CwdDeleted (version 3): the working directory was removed; restore
	// gives the process an empty stand-in at Cwd, removed again.
	CwdDeleted bool `json:"cwd_deleted,omitempty"`
	// CwdMode and CwdOwner (version 3): of a removed working directory,
	// for its stand-in (without them: 0700, the process's fs ids).
	CwdMode  uint32     `json:"cwd_mode,omitempty"`
	CwdOwner *Ownership `json:"cwd_owner,omitempty"`
	// ExeFile (version 3): the executable had been deleted (Exe ends in
	// " (deleted)"): a record of kind deleted with its content, so that
	// restore can point the exe link at a stand-in.
	ExeFile *File `json:"exe_file,omitempty"`

	Creds       Creds       `json:"creds"`
	Umask       uint32      `json:"umask"`
	Personality uint32      `json:"personality"`
	Rlimits     []Rlimit    `json:"rlimits"`
	MM          MM          `json:"mm"`
	Auxv        []byte      `json:"auxv"`
	Sigactions  []Sigaction `json:"sigactions,omitempty"` // handled and ignored signals, and SIGCHLD; the rest are plain SIG_DFL
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

	// Memory holds mm-wide memory settings (version 3, memory.go).
	Memory *MemoryState `json:"memory,omitempty"`
	// Timers (version 3, timers.go): armed setitimer(2) timers and every
	// timer_create(2) timer, armed or not.
	ITimers     []ITimer     `json:"itimers,omitempty"`
	PosixTimers []PosixTimer `json:"posix_timers,omitempty"`
	// Version 3: the rest of a process's place in the tree.
	//
	// StopSignal is the signal that stopped a Stopped process (SIGSTOP,
	// SIGTSTP, SIGTTIN or SIGTTOU): what its parent's waitpid(WUNTRACED)
	// reports as WSTOPSIG. 0 in older images: SIGSTOP.
	StopSignal int `json:"stop_signal,omitempty"`
	// StopWaited says the parent had already collected the stop with
	// wait (WUNTRACED/WSTOPPED): it is not reported again. Absent, the
	// stop is waiting to be collected.
	StopWaited bool `json:"stop_waited,omitempty"`
	// Attributes and seccomp filters (version 3, attrs.go).
	Attrs   *ProcessAttrs   `json:"attrs,omitempty"`
	Seccomp []SeccompFilter `json:"seccomp_filters,omitempty"`
	// SemUndo are the process's System V semaphore adjustments (version 3).
	SemUndo []SemUndo `json:"sem_undo,omitempty"`
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
	// System V IPC objects that belong to the checkpoint (version 3).
	SysV *SysVObjects `json:"sysv,omitempty"`
	// Terminals (version 3): pty pairs and outside controlling terminals.
	TTYs []TTY `json:"ttys,omitempty"`
	// Mapped files stored in the image, --embed-files (version 3, embed.go).
	Embedded []EmbeddedFile `json:"embedded,omitempty"`
}

// Pipe is one pipe or FIFO with the bytes written to it and not yet read.
type Pipe struct {
	ID       int       `json:"id"`
	Inode    uint64    `json:"inode"`
	Capacity int       `json:"capacity"`       // F_GETPIPE_SZ
	FIFO     string    `json:"fifo,omitempty"` // path of a named FIFO
	Data     []DataRun `json:"data,omitempty"` // unread bytes; Addr is 0
	// Version 3: the FIFO was unlinked while open; restore makes a
	// stand-in FIFO at its path with Mode and Owner and unlinks it.
	Deleted bool       `json:"deleted,omitempty"`
	Mode    uint32     `json:"mode,omitempty"`
	Owner   *Ownership `json:"owner,omitempty"`
}

// SharedMem is shared memory (MAP_SHARED|MAP_ANONYMOUS, /dev/zero, memfd)
// saved once however many processes map it. Pages' Addr is the offset in
// the object.
type SharedMem struct {
	ID    int       `json:"id"`
	Inode uint64    `json:"inode"`
	Size  uint64    `json:"size"`
	Pages []DataRun `json:"pages,omitempty"`

	// Memfd marks a memfd_create(2) object (version 3, memory.go): it comes
	// back as a memfd with its name, mode and seals. Without it the object
	// is anonymous shared memory.
	Memfd bool   `json:"memfd,omitempty"`
	Name  string `json:"name,omitempty"`  // as given to memfd_create
	Seals int    `json:"seals,omitempty"` // F_GET_SEALS
	Mode  uint32 `json:"mode,omitempty"`  // permission bits (memfd: MFD_EXEC/MFD_NOEXEC_SEAL)
	// Deleted is the path of an unlinked regular file mapped MAP_SHARED
	// (version 3): restore makes an unlinked file in its directory, which
	// the fds of that file (kind deleted, Shm set) open too.
	Deleted string `json:"deleted,omitempty"`
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
	// SecureBits is prctl(PR_GET_SECUREBITS) (version 3): SECBIT_NOROOT,
	// KEEP_CAPS, NO_CAP_AMBIENT_RAISE ... and their locks. Lost, a root
	// process could win back by execve capabilities it had given up. Nil
	// in older images.
	SecureBits *uint32 `json:"securebits,omitempty"`
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

	// Attributes and seccomp state (version 3, attrs.go). SeccompMode is
	// SeccompModeNone, SeccompModeStrict or SeccompModeFilter; in filter mode the
	// thread's newest filter is Process.Seccomp ID SeccompFilter.
	Attrs         *ThreadAttrs `json:"attrs,omitempty"`
	SeccompMode   int          `json:"seccomp_mode,omitempty"`
	SeccompFilter int          `json:"seccomp_filter,omitempty"`
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

	// Memory details (version 3, memory.go).
	Advice []string `json:"advice,omitempty"` // Advice* names
	Lock   string   `json:"lock,omitempty"`   // "", LockLocked or LockOnFault
	// Guards are MADV_GUARD_INSTALL regions: touching them faults.
	Guards []Span `json:"guards,omitempty"`
	// Sealed is mseal(2): the area can no longer be changed or unmapped.
	Sealed bool `json:"sealed,omitempty"`
	// NoReserve is MAP_NORESERVE: no swap space is accounted for it.
	NoReserve bool `json:"no_reserve,omitempty"`
	// Inherited are pages still shared copy-on-write with the parent
	// process (after fork), saved once, in the parent's record: restore
	// copies them from the restored parent's same addresses.
	Inherited []Span `json:"inherited,omitempty"`
	// MayWrite tells, for a shared mapping, whether mprotect may make it
	// writable (VM_MAYWRITE: the file was opened for writing and not
	// write-sealed); nil in older images.
	MayWrite *bool `json:"may_write,omitempty"`
	// System V shared memory (version 3): kind sysv-shm.
	SysVShm int `json:"sysv_shm,omitempty"` // ID in Objects.SysV.Shm
	// SysVFlags are the shmat(2) flags of the attachment: SHM_RDONLY
	// (010000), SHM_EXEC (0100000).
	SysVFlags int `json:"sysv_flags,omitempty"`
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
	// Version 3: the EmbeddedFile.ID of the file's copy in the image, 0 if
	// none (embed.go).
	Embedded int `json:"embedded,omitempty"`
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
	// FileSignalfd is a signalfd(2) reading the signals in SigMask
	// (version 3).
	FileSignalfd = "signalfd"
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
	// FileMemfd is a memfd (version 3): Shm is its object in Objects.Shm,
	// which mappings of it share.
	FileMemfd = "memfd"
	// FileTimerfd is a timerfd_create(2) descriptor: Timerfd holds its
	// state (version 3).
	FileTimerfd = "timerfd"
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
	// Desc is the open file description watched, when it is no longer
	// the one at FD (FD was closed or reused after epoll_ctl added it;
	// version 3): restore puts it at FD for the EPOLL_CTL_ADD only. 0: the
	// file at FD.
	Desc int `json:"desc,omitempty"`
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
	Shm      int       `json:"shm,omitempty"`      // kind memfd, or deleted and mapped: ID in Objects.Shm (version 3)
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

	// Event descriptors and owners (version 3, events.go).
	Inotify  []InotifyWatch `json:"inotify,omitempty"`   // inotify: watches in WD order
	PidfdPID int            `json:"pidfd_pid,omitempty"` // pidfd: its process, -1 reaped
	Owner    *FileOwner     `json:"owner,omitempty"`     // F_SETOWN_EX/F_SETSIG, nil if none
	Fanotify *Fanotify      `json:"fanotify,omitempty"`  // fanotify: flags and marks
	Timerfd  *Timerfd       `json:"timerfd,omitempty"`   // kind timerfd (version 3)
	// Locks held through this fd (version 3; pkg/format/locks.go).
	Locks []Lock `json:"locks,omitempty"`
	// SigMask is a signalfd's set of signals, bit n-1 for signal n
	// (version 3).
	SigMask uint64 `json:"sigmask,omitempty"`
	// Version 3 (files.go). Deleted: the path was unlinked while open
	// (kinds dir, chardev, blockdev; a deleted regular file is kind
	// deleted): restore makes a stand-in there and unlinks it. Size: a
	// deleted file's size (Content has its data; the rest are holes).
	// Owner: a deleted file's owner. Rdev: a device's number. Dev and
	// Inode: the file a path named, so restore can refuse another one.
	Deleted  bool       `json:"deleted,omitempty"`
	Size     int64      `json:"size,omitempty"`
	OwnerIDs *Ownership `json:"owner_ids,omitempty"`
	Rdev     uint64     `json:"rdev,omitempty"`
	Dev      uint64     `json:"dev,omitempty"`
	Inode    uint64     `json:"inode,omitempty"`
}
