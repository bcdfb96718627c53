package restore

import (
	"fmt"
	"os"

	"github.com/chpox/chpox/pkg/format"
)

// external returns the file that stands in for a descriptor that was shared
// with a process outside the checkpoint.
func (o *objects) external(f format.File) (*os.File, error) {
	return nil, fmt.Errorf("fd %d was shared with a process outside the checkpoint, which this chpox cannot restore yet: %w", f.FD, ErrIncompatible)
}
