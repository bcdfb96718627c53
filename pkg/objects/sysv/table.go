// Package sysv checkpoints System V IPC objects: shared memory segments
// with their content, semaphore sets with their values, message queues
// with their messages. They belong to the IPC namespace, not to a
// process; a process holds only their ids (in its memory) and the
// attachments of segments (in its address space). Dump reads them from
// /proc/sysvipc and through the ipc calls; restore creates each again with
// the same key and id (/proc/sys/kernel/{shm,sem,msg}_next_id), owner and
// mode, before any process runs, and pkg/restore attaches the segments at
// their addresses with shmat injected in each process.
//
// This package must not decide which objects belong to a checkpoint on its
// own: Select applies the rule of docs/usage.md to the tree it is given.
package sysv

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/chpox/chpox/pkg/format"
)

// Mode bits /proc/sysvipc/shm shows beside the permissions (include/linux/shm.h).
const (
	shmDest   = 0o1000 // SHM_DEST: marked with IPC_RMID, dies with its last detach
	shmLocked = 0o2000 // SHM_LOCKED: SHM_LOCK
)

// ShmEntry is one line of /proc/sysvipc/shm.
type ShmEntry struct {
	format.SysVPerm
	Size            uint64
	CPID, LPID      int
	Nattch          int
	Removed, Locked bool
}

// SemEntry is one line of /proc/sysvipc/sem.
type SemEntry struct {
	format.SysVPerm
	NSems int
}

// MsgEntry is one line of /proc/sysvipc/msg.
type MsgEntry struct {
	format.SysVPerm
	CBytes, QNum uint64
	LSPID, LRPID int
}

// Table is what /proc/sysvipc lists in chpox's IPC namespace.
type Table struct {
	Shm []ShmEntry
	Sem []SemEntry
	Msg []MsgEntry
}

// ReadTable reads /proc/sysvipc/{shm,sem,msg} (ipc/shm.c sysvipc_shm_proc_show
// and its siblings; one header line, then one object a line).
func ReadTable() (*Table, error) { return readTable("/proc/sysvipc") }

func readTable(dir string) (*Table, error) {
	t := &Table{}
	err := eachLine(dir+"/shm", func(f map[string]int64) {
		e := ShmEntry{SysVPerm: perm(f, "shmid"), Size: uint64(f["size"]), CPID: int(f["cpid"]), LPID: int(f["lpid"]), Nattch: int(f["nattch"])}
		e.Removed, e.Locked = f["perms"]&shmDest != 0, f["perms"]&shmLocked != 0
		t.Shm = append(t.Shm, e)
	})
	if err == nil {
		err = eachLine(dir+"/sem", func(f map[string]int64) {
			t.Sem = append(t.Sem, SemEntry{SysVPerm: perm(f, "semid"), NSems: int(f["nsems"])})
		})
	}
	if err == nil {
		err = eachLine(dir+"/msg", func(f map[string]int64) {
			t.Msg = append(t.Msg, MsgEntry{SysVPerm: perm(f, "msqid"), CBytes: uint64(f["cbytes"]), QNum: uint64(f["qnum"]),
				LSPID: int(f["lspid"]), LRPID: int(f["lrpid"])})
		})
	}
	if err != nil {
		return nil, fmt.Errorf("read System V IPC objects: %w", err)
	}
	return t, nil
}

func perm(f map[string]int64, id string) format.SysVPerm {
	return format.SysVPerm{Key: int32(f["key"]), KID: int(f[id]), Mode: uint32(f["perms"]) & 0o777,
		UID: uint32(f["uid"]), GID: uint32(f["gid"]), CUID: uint32(f["cuid"]), CGID: uint32(f["cgid"])}
}

// eachLine calls fn with the fields of each object line, named by the
// header; perms is octal, the rest decimal.
func eachLine(path string, fn func(map[string]int64)) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil // a kernel without CONFIG_SYSVIPC has no objects
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if names == nil {
			names = fields
			continue
		}
		if len(fields) < len(names) {
			return fmt.Errorf("%s: short line %q", path, sc.Text())
		}
		vals := map[string]int64{}
		for i, name := range names {
			base := 10
			if name == "perms" {
				base = 8
			}
			v, err := strconv.ParseInt(fields[i], base, 64)
			if err != nil {
				return fmt.Errorf("%s: %s %q: %w", path, name, fields[i], err)
			}
			vals[name] = v
		}
		fn(vals)
	}
	return sc.Err()
}
