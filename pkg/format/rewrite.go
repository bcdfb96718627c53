package format

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrCancelled: Rewrite was asked to stop; the image is as it was.
var ErrCancelled = errors.New("rewrite cancelled")

// ErrNoRoom: the file system has not room for a copy of the image beside
// it (and a quarter more for the job).
var ErrNoRoom = errors.New("no room for a rewrite")

// rewriteChunk is read and written at a time; each one's writeback is
// started at once, so the final fsync has little left to do.
const rewriteChunk = 8 << 20

// Rewrite copies the committed image src (open on the image file named
// src.Name()) byte for byte into a file of its own blocks and renames it
// into place, for an image made of thousands of pieces shared with
// earlier ones (reflinks): cloning from it would cost per piece. The
// content is the same, so readers of either file see the same image.
// stop is asked between chunks; true abandons the copy. The image is left
// alone when the name no longer holds src. It returns the new file, open
// for reading.
func Rewrite(src *os.File, stop func() bool) (*os.File, error) {
	path := src.Name()
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	st, err := src.Stat()
	if err != nil {
		return nil, fmt.Errorf("rewrite image %s: %w", path, err)
	}
	// The old blocks stay until the series lets the old image go: the
	// copy needs a whole image of free space, and must not take the last
	// of it from the job.
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(src.Fd()), &fs); err != nil {
		return nil, fmt.Errorf("rewrite image %s: statfs: %w", path, err)
	}
	if free := int64(fs.Bavail) * fs.Bsize; free < st.Size()+st.Size()/4+64<<20 {
		return nil, fmt.Errorf("rewrite image %s: %d bytes free, not enough beside a copy of %d: %w", path, free, st.Size(), ErrNoRoom)
	}
	tmp, err := createTemp(dir, base)
	if err != nil {
		return nil, fmt.Errorf("rewrite image %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			removeOwn(tmp)
		}
	}()
	if err := copyChunks(tmp, src, st.Size(), stop); err != nil {
		return nil, fmt.Errorf("rewrite image %s: %w", path, err)
	}
	if stop() {
		return nil, fmt.Errorf("rewrite image %s: %w", path, ErrCancelled)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("rewrite image %s: fsync: %w", path, err)
	}
	if stop() {
		return nil, fmt.Errorf("rewrite image %s: %w", path, ErrCancelled)
	}
	if err := replace(tmp.Name(), path, st); err != nil {
		return nil, fmt.Errorf("rewrite image %s: %w", path, err)
	}
	done = true
	if err := syncDir(dir); err != nil {
		tmp.Close()
		return nil, err
	}
	// Reopened for reading only, as the series reads its last image:
	// through the descriptor, not the name, which may hold another file
	// by now.
	f, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", tmp.Fd()))
	tmp.Close()
	if err != nil {
		return nil, fmt.Errorf("rewrite image %s: reopen: %w", path, err)
	}
	return f, nil
}

var errOther = errors.New("the name holds another file now; left alone")

// replace puts the file named tmp in path's place only if path still
// holds the file st describes. rename(2) would take whatever a writer put
// there since a check; RENAME_EXCHANGE swaps the two names in one step,
// so the file it took out can be checked, and given its name back if it
// is not st.
func replace(tmp, path string, st os.FileInfo) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_EXCHANGE)
	if err == unix.EINVAL || err == unix.ENOSYS {
		// A filesystem without the exchange: check, then rename.
		if now, err := os.Stat(path); err != nil || !os.SameFile(now, st) {
			return errOther
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("rename: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("rename (exchange): %w", err)
	}
	if out, err := os.Stat(tmp); err == nil && os.SameFile(out, st) {
		// The old image, out of place: its blocks stay while src is open.
		if err := os.Remove(tmp); err != nil {
			return fmt.Errorf("remove the image replaced: %w", err)
		}
		return nil
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("%w, and giving it its name back failed (it is at %s): %w", errOther, tmp, err)
	}
	return errOther
}

// removeOwn closes f and removes its name, unless the name holds another
// file by now.
func removeOwn(f *os.File) {
	mine, err := f.Stat()
	f.Close()
	if now, err2 := os.Stat(f.Name()); err == nil && err2 == nil && os.SameFile(now, mine) {
		os.Remove(f.Name())
	}
}

// copyChunks copies size bytes of src into dst with read and write (not
// copy_file_range: on XFS that would share the blocks again).
func copyChunks(dst, src *os.File, size int64, stop func() bool) error {
	buf := make([]byte, rewriteChunk)
	for off := int64(0); off < size; off += rewriteChunk {
		if stop() {
			return ErrCancelled
		}
		n := min(rewriteChunk, size-off)
		if _, err := src.ReadAt(buf[:n], off); err != nil {
			return err // io.EOF too: the image shrank under us
		}
		if _, err := dst.WriteAt(buf[:n], off); err != nil {
			return err
		}
		// Start the writeback now; the page cache need not keep
		// gigabytes dirty, nor the fsync wait for them.
		unix.SyncFileRange(int(dst.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
	}
	return nil
}
