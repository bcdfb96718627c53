package format

// Event descriptors and descriptor details (version 3): inotify instances,
// pidfds, which file an epoll watch really watches, and the SIGIO owner of
// an open file description. Absent in older images, which had none of them.

// File kinds of version 3.
const (
	// FileInotify is an inotify instance: Inotify lists its watches.
	FileInotify = "inotify"
	// FilePidfd is a pidfd: PidfdPID is the process it refers to, a
	// process of the image, or -1 for one that had exited and been
	// reaped.
	FilePidfd = "pidfd"
)

// InotifyWatch is one watch of an inotify instance.
type InotifyWatch struct {
	// WD is the watch descriptor the program knows it by; restore gives
	// it the same number.
	WD int `json:"wd"`
	// Path names the watched inode (resolved from its file handle at
	// dump).
	Path string `json:"path"`
	// Mask is the event mask with IN_ONESHOT and IN_EXCL_UNLINK, as
	// inotify_add_watch(2) takes it.
	Mask uint32 `json:"mask"`
}

// FileOwner is who receives SIGIO/SIGURG for an open file description
// (fcntl F_SETOWN_EX) and with which signal (F_SETSIG; 0 is SIGIO).
type FileOwner struct {
	// Type is F_OWNER_TID (0), F_OWNER_PID (1) or F_OWNER_PGRP (2).
	Type int `json:"type"`
	// PID is the thread, process or process group: one of the image
	// (0: no owner).
	PID int `json:"pid,omitempty"`
	Sig int `json:"sig,omitempty"`
}

// FileFanotify is a fanotify instance (version 3): Fanotify holds its
// groups's flags and marks.
const FileFanotify = "fanotify"

// Fanotify is a fanotify group as fanotify_init(2) made it, with its marks.
type Fanotify struct {
	Flags      uint32         `json:"flags"`       // fanotify_init flags (FAN_CLASS_*, FAN_REPORT_* ...)
	EventFlags uint32         `json:"event_flags"` // fanotify_init event_f_flags (O_RDONLY ...)
	Marks      []FanotifyMark `json:"marks,omitempty"`
}

// Fanotify mark kinds.
const (
	FanotifyInode      = "inode"      // a file or directory
	FanotifyMount      = "mount"      // FAN_MARK_MOUNT
	FanotifyFilesystem = "filesystem" // FAN_MARK_FILESYSTEM
)

// FanotifyMark is one mark of a fanotify group.
type FanotifyMark struct {
	Kind string `json:"kind"`
	// Path names the inode, a path on the mount or one on the
	// filesystem.
	Path string `json:"path"`
	// MFlags are the mark's FAN_MARK_IGNORED_SURV_MODIFY, FAN_MARK_EVICTABLE
	// and FAN_MARK_IGNORE as fdinfo shows them.
	MFlags      uint32 `json:"mflags,omitempty"`
	Mask        uint32 `json:"mask,omitempty"`
	IgnoredMask uint32 `json:"ignored_mask,omitempty"`
}
