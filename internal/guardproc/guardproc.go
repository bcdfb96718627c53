// Package guardproc starts and ends a guard: the chpox binary run again
// as a small process of its own session (a Ctrl-C to chpox's process group
// does not take it along) that holds what chpox must not leave behind if
// it dies — the network lock's sockets (pkg/netlock), a lazy copy's
// userfaultfds (pkg/lazy). It learns of chpox's death from a life
// descriptor whose other end only chpox holds, and of a clean end from
// "ok" written on it.
package guardproc

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// Start runs this executable with the one argument command, extra as its
// descriptors 3, 4, ... (the life descriptor first, by convention) and
// desc, JSON-encoded, on its standard input. what names the guard in
// errors. The caller closes its copies of extra afterwards.
func Start(what, command string, extra []*os.File, desc any) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", what, err)
	}
	in, err := json.Marshal(desc)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", what, err)
	}
	cmd := exec.Command(exe, command)
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", what, err)
	}
	_, err = stdin.Write(in)
	stdin.Close()
	if err != nil {
		// Without its description it guards nothing: end it.
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("start %s: %w", what, err)
	}
	return cmd, nil
}

// Release tells the guard cmd that chpox is done ("ok" on life, which it
// closes) and waits for it to exit.
func Release(what string, cmd *exec.Cmd, life *os.File) error {
	_, err := life.Write([]byte("ok"))
	life.Close()
	if werr := cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("%s: %w", what, werr)
	}
	return err
}
