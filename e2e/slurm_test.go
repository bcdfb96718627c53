package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// slurm is a single-node Slurm cluster of the test's own: its munged, its
// slurmctld and slurmd on free loopback ports, state, spool and logs in
// a scratch directory (design notes: Slurm on these machines).
type slurm struct {
	dir  string
	conf string
}

// startSlurm starts munged, slurmctld and slurmd from Debian's packages
// (make setup) and stops them, and every process of their jobs, at the end
// of the test, also when it fails.
func startSlurm(t *testing.T) *slurm {
	t.Helper()
	for _, c := range []string{"munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue"} {
		needCommand(t, c)
	}
	// munged refuses directories other users may write: one of its own.
	dir, err := os.MkdirTemp("", "chpox-slurm-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	s := &slurm{dir: dir, conf: filepath.Join(dir, "slurm.conf")}
	t.Cleanup(func() { s.stop(t) })
	munge := filepath.Join(dir, "munge")
	os.Mkdir(munge, 0o755) // the socket must be reachable by all
	if out, err := exec.Command("chown", "munge:munge", munge).CombinedOutput(); err != nil {
		t.Fatalf("chown munge: %v\n%s", err, out)
	}
	s.run(t, "runuser", "-u", "munge", "--", "munged", "--socket="+munge+"/socket",
		"--pid-file="+munge+"/pid", "--log-file="+munge+"/log", "--seed-file="+munge+"/seed")
	for _, d := range []string{"state", "spool", "log"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	node, err := exec.Command("slurmd", "-C").Output()
	if err != nil {
		t.Fatal("slurmd -C:", err)
	}
	host, _ := os.Hostname()
	conf := fmt.Sprintf(`ClusterName=chpoxtest
SlurmctldHost=%[1]s
SlurmUser=root
SlurmdUser=root
SlurmctldPort=%[2]d
SlurmdPort=%[3]d
AuthType=auth/munge
AuthInfo=socket=%[4]s/munge/socket
StateSaveLocation=%[4]s/state
SlurmdSpoolDir=%[4]s/spool
SlurmctldPidFile=%[4]s/slurmctld.pid
SlurmdPidFile=%[4]s/slurmd.pid
SlurmctldLogFile=%[4]s/log/slurmctld.log
SlurmdLogFile=%[4]s/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
%[5]s
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
`, host, freePort(t), freePort(t), dir, strings.SplitN(string(node), "\n", 2)[0])
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.run(t, "slurmctld", "-i")
	s.run(t, "slurmd")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(s.out(t, "sinfo", "-h", "-o", "%t"), "idle") {
		if time.Now().After(deadline) {
			t.Fatalf("the node never became idle; slurmd log:\n%s", tailFile(filepath.Join(dir, "log", "slurmd.log")))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	return tailOf(b)
}

func (s *slurm) cmd(name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), "SLURM_CONF="+s.conf)
	c.Dir = s.dir
	return c
}

// run runs a Slurm (or munge) command that must succeed.
func (s *slurm) run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := s.cmd(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func (s *slurm) out(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := s.cmd(name, args...).Output()
	if err != nil {
		t.Logf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out)
}

// stop cancels every job, stops the daemons and kills whatever of theirs
// is left (a slurmstepd, a job's process): nothing outlives the test.
func (s *slurm) stop(t *testing.T) {
	s.cmd("scancel", "--full", "--user=root").Run()
	for _, pidFile := range []string{"slurmd.pid", "slurmctld.pid", "munge/pid"} {
		b, err := os.ReadFile(filepath.Join(s.dir, pidFile))
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			unix.Kill(pid, unix.SIGTERM)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := processesMentioning(s.dir)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of the test's Slurm outlive it: %v", left)
			break
		}
		if time.Now().Add(8 * time.Second).After(deadline) {
			for _, pid := range left {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	os.RemoveAll(s.dir)
}

// processesMentioning lists the processes whose command line or working
// directory lies in dir: the daemons (their config), slurmstepd and the jobs.
func processesMentioning(dir string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if strings.Contains(string(cmdline), dir) || strings.HasPrefix(cwd, dir) || strings.Contains(string(environ), "SLURM_CONF="+dir) {
			if !strings.Contains(procState(pid), "Z") {
				out = append(out, pid)
			}
		}
	}
	return out
}

// TestSlurmRequeue runs the docs/slurm.md recipe (testdata/slurm-job.sh) on
// a real single-node Slurm: the job starts its app under chpox run; USR2
// sent to the batch script (scancel -b, as sbatch --signal=B: does) writes
// a checkpoint; Slurm requeues the job; the second run restores the app,
// which ends with the result an uninterrupted run gives.
func TestSlurmRequeue(t *testing.T) {
	setup(t, "slurmjob")
	const steps = "300"
	want := make(chan string, 1)
	go func() {
		out, _ := exec.Command(progs["slurmjob"], steps).Output()
		want <- regexp.MustCompile(`result [0-9a-f]+`).FindString(string(out))
	}()
	s := startSlurm(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(s.dir, "job.out")
	img := filepath.Join(s.dir, "job.chp")
	submit := s.cmd("sbatch", "--parsable", "--requeue", "--open-mode=append", "--signal=B:USR2@120",
		"-o", out, "--export=ALL", filepath.Join(root, "testdata", "slurm-job.sh"), progs["slurmjob"], steps)
	submit.Env = append(submit.Env, "CHPOX="+chpoxBin, "CHPOX_IMAGE="+img)
	b, err := submit.Output()
	if err != nil {
		t.Fatalf("sbatch: %v", err)
	}
	job := strings.TrimSpace(string(b))
	began := time.Now()
	waitFile(t, out, `(?m)^step 50$`, 1, 20*time.Second)
	s.run(t, "scancel", "-b", "-s", "USR2", job)
	waitFile(t, out, `(?m)^chpox: checkpoint 1 at .* -> `+regexp.QuoteMeta(img)+`$`, 1, 10*time.Second)
	signalled := time.Now()
	s.run(t, "scontrol", "requeue", job)
	// A requeued job may start again only 120 s later (cred_expire):
	// once it is pending again, start it now.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(tailFile(out), ": run 2 on ") {
		if time.Now().After(deadline) {
			t.Fatalf("the requeued job did not start again (state %q); output:\n%s", s.out(t, "squeue", "-h", "-j", job, "-o", "%T %r"), tailFile(out))
		}
		if strings.HasPrefix(s.out(t, "squeue", "-h", "-j", job, "-o", "%T"), "PENDING") {
			s.cmd("scontrol", "update", "JobId="+job, "StartTime=now").Run()
		}
		time.Sleep(200 * time.Millisecond)
	}
	restarted := time.Now()
	m := waitFile(t, out, `(?m)^(result [0-9a-f]+)$`, 1, 30*time.Second)
	if w := <-want; m[1] != w {
		t.Errorf("the requeued job ended with %q, an uninterrupted run with %q; output:\n%s", m[1], w, tailFile(out))
	}
	t.Logf("submit to checkpoint %v, requeue to restart %v, restart to result %v",
		signalled.Sub(began).Round(time.Millisecond), restarted.Sub(signalled).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	data, _ := os.ReadFile(out)
	_, second, _ := strings.Cut(string(data), ": run 2 on ")
	if strings.Count(string(data), "chpox job ") != 2 || strings.Contains(second, "\nstep 50\n") || !strings.Contains(second, "\nstep 300\n") {
		t.Errorf("want a second run that goes on from the checkpoint (after step 50) to step 300; output:\n%s", data)
	}
}

// waitFile waits until pattern is in the file n times and returns the
// last match's groups.
func waitFile(t *testing.T, path, pattern string, n int, timeout time.Duration) []string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(timeout)
	for {
		data, _ := os.ReadFile(path)
		if all := re.FindAllStringSubmatch(string(data), -1); len(all) >= n {
			return all[len(all)-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %d× %q within %v; it holds:\n%s", path, n, pattern, timeout, tailOf(data))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
