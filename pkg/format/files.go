package format

// Version 3: files that are gone or special (issue 10).

// More file kinds.
const (
	// FileBlock is a block device, reopened by path like a chardev.
	FileBlock = "blockdev"
	// FilePath is an O_PATH descriptor of any kind of file (a symlink
	// held with O_PATH|O_NOFOLLOW included): Mode tells what it names;
	// it is reopened by path with O_PATH.
	FilePath = "path"
)

// Ownership is the owner of a deleted file (or FIFO, directory, device
// node) whose stand-in restore creates.
type Ownership struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}
