package format

// System V IPC objects (version 3). They live in the IPC namespace beside
// the processes, not in them: a process reaches one by its kernel id,
// which it keeps in its memory, so restore must give each object the same
// id (and key) again. Which objects belong to a checkpoint is decided at
// dump (docs/usage.md, "System V IPC").

// VMA kind of an attachment of a System V shared memory segment
// (shmat(2)); VMA.SysVShm names the segment, Offset is the offset in it.
const VMASysVShm = "sysv-shm"

// SysVPerm is an object's struct ipc_perm.
type SysVPerm struct {
	Key  int32  `json:"key"`  // 0 (IPC_PRIVATE) for a private or removed object
	KID  int    `json:"kid"`  // the kernel's id (shmid, semid, msqid)
	Mode uint32 `json:"mode"` // permission bits, 0777
	UID  uint32 `json:"uid"`  // owner
	GID  uint32 `json:"gid"`
	CUID uint32 `json:"cuid"` // creator
	CGID uint32 `json:"cgid"`
}

// SysVShm is a shared memory segment with its content. Pages' Addr is the
// offset in the segment.
type SysVShm struct {
	ID int `json:"id"` // in the image, from 1
	SysVPerm
	Size uint64 `json:"size"`
	// Removed segments were marked with IPC_RMID: they die with their last
	// detach, and their key is gone.
	Removed bool      `json:"removed,omitempty"`
	Pages   []DataRun `json:"pages,omitempty"`
	// CPID and LPID are the creator and the last to attach or detach:
	// restore has the last of them that is a process of the image attach
	// and detach it again, so that a later dump finds it as before.
	CPID int `json:"cpid,omitempty"`
	LPID int `json:"lpid,omitempty"`
}

// SysVSem is a semaphore set with the value of each semaphore.
type SysVSem struct {
	ID int `json:"id"`
	SysVPerm
	Values []uint16 `json:"values"`
	// PIDs are the last to change each semaphore (GETPID): restore has
	// each one that is a process of the image do a semop that changes
	// nothing, so that a later dump finds the set as before.
	PIDs []int `json:"pids,omitempty"`
}

// SysVMsgQueue is a message queue with its messages, oldest first.
type SysVMsgQueue struct {
	ID int `json:"id"`
	SysVPerm
	QBytes   uint64        `json:"qbytes"` // msg_qbytes: the most bytes it may hold
	Messages []SysVMessage `json:"messages,omitempty"`
	// LSPID and LRPID are the last sender and receiver; restore has the
	// ones that are processes of the image send and receive (see
	// docs/format.md) so that a later dump finds the queue as before.
	LSPID int `json:"lspid,omitempty"`
	LRPID int `json:"lrpid,omitempty"`
}

// SysVMessage is one queued message: its type and its text.
type SysVMessage struct {
	Type int64   `json:"type"`
	Text DataRun `json:"text"` // Addr is 0
}

// SysVObjects groups what Objects holds of System V IPC.
type SysVObjects struct {
	Shm []SysVShm      `json:"shm,omitempty"`
	Sem []SysVSem      `json:"sem,omitempty"`
	Msg []SysVMsgQueue `json:"msg,omitempty"`
}

// SemUndo is a process's SEM_UNDO adjustment of one semaphore: what its
// exit adds to the value (semadj). Only adjustments that are not 0 are
// kept (version 3).
type SemUndo struct {
	KID int `json:"kid"` // the kernel id of a set in Objects.SysV.Sem
	Num int `json:"num"` // the semaphore in the set
	Adj int `json:"adj"` // -32768 .. 32767
}
