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
