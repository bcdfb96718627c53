package format

// Process and thread attributes the kernel keeps outside memory, registers
// and files (version 3). Absent (nil) in older images: restore then leaves
// what the restored process inherits from chpox, as before.

// Scheduling policies (include/uapi/linux/sched.h).
const (
	SchedOther    = 0
	SchedFIFO     = 1
	SchedRR       = 2
	SchedBatch    = 3
	SchedIdle     = 5
	SchedDeadline = 6
	SchedExt      = 7
)

// ThreadAttrs are the attributes the kernel keeps per thread (task_struct):
// scheduling, CPU affinity, I/O priority, timer slack and the parent-death
// signal.
type ThreadAttrs struct {
	// sched_getattr(2): policy, SCHED_FLAG_RESET_ON_FORK in Flags, nice
	// (SCHED_OTHER, SCHED_BATCH), the real-time priority (SCHED_FIFO,
	// SCHED_RR), the SCHED_DEADLINE parameters and utilization clamps.
	Policy   uint32 `json:"policy"`
	Flags    uint64 `json:"sched_flags,omitempty"`
	Nice     int32  `json:"nice"`
	Priority uint32 `json:"rt_priority,omitempty"`
	Runtime  uint64 `json:"dl_runtime,omitempty"`
	Deadline uint64 `json:"dl_deadline,omitempty"`
	Period   uint64 `json:"dl_period,omitempty"`
	UtilMin  uint32 `json:"util_min,omitempty"`
	UtilMax  uint32 `json:"util_max,omitempty"`
	// Affinity is the sched_getaffinity(2) mask, 64 CPUs a word, CPU 0 in
	// bit 0 of the first word.
	Affinity []uint64 `json:"affinity,omitempty"`
	// IOPrio is ioprio_get(IOPRIO_WHO_PROCESS, tid): class << 13 | data.
	IOPrio uint32 `json:"ioprio"`
	// TimerSlack is prctl(PR_GET_TIMERSLACK), in nanoseconds.
	TimerSlack uint64 `json:"timer_slack_ns"`
	// PdeathSig is prctl(PR_GET_PDEATHSIG): the signal the thread gets
	// when the thread that forked its process exits.
	PdeathSig int `json:"pdeathsig,omitempty"`
	// TSC is prctl(PR_GET_TSC): 2 (PR_TSC_SIGSEGV) if rdtsc faults; 0 or
	// 1, it may run.
	TSC int `json:"tsc,omitempty"`
	// MCEKill is the machine-check kill policy prctl(PR_MCE_KILL) set:
	// "early" or "late"; empty, the system's default.
	MCEKill string `json:"mce_kill,omitempty"`
}

// ProcessAttrs are the attributes the kernel keeps per process (signal
// struct, mm, audit).
type ProcessAttrs struct {
	OOMScoreAdj int `json:"oom_score_adj"` // /proc/PID/oom_score_adj
	// ChildSubreaper is prctl(PR_GET_CHILD_SUBREAPER).
	ChildSubreaper bool `json:"child_subreaper,omitempty"`
	// THPDisable is prctl(PR_GET_THP_DISABLE): bit 0 disabled, bit 1
	// PR_THP_DISABLE_EXCEPT_ADVISED (kernel 6.18).
	THPDisable uint32 `json:"thp_disable,omitempty"`
	// Membarrier is membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS): the
	// MEMBARRIER_CMD_REGISTER_* commands the process made. Nil where the
	// kernel cannot tell (before 6.3).
	Membarrier *uint32 `json:"membarrier,omitempty"`
	// LoginUID is /proc/PID/loginuid (4294967295: not set); nil without
	// audit support. SessionID is /proc/PID/sessionid, informational: the
	// kernel gives a process a new session id whenever its loginuid is set,
	// so it cannot be restored.
	LoginUID  *uint32 `json:"loginuid,omitempty"`
	SessionID *uint32 `json:"sessionid,omitempty"`
}

// SeccompFilter is one seccomp filter program of a process. Filters form a
// tree, as in the kernel: each thread runs its newest filter (Thread.Seccomp)
// and every filter before it, back along Parent. Threads that ran one
// filter chain name the same filter.
type SeccompFilter struct {
	ID     int `json:"id"`               // from 1, in the order of Process.Seccomp
	Parent int `json:"parent,omitempty"` // the filter installed before it; 0: none
	// Flags are the SECCOMP_FILTER_FLAG_* the kernel reports for it
	// (PTRACE_SECCOMP_GET_METADATA): SECCOMP_FILTER_FLAG_LOG.
	Flags uint64 `json:"flags,omitempty"`
	// Prog is the classic BPF program as the kernel returns it
	// (PTRACE_SECCOMP_GET_FILTER): 8-byte struct sock_filter entries.
	Prog []byte `json:"prog"`
}

// Seccomp modes of a thread (Thread.SeccompMode).
const (
	SeccompModeNone   = 0
	SeccompModeStrict = 1
	SeccompModeFilter = 2
)

// SeccompChain lists the IDs of the filters thread th runs, oldest first.
// The image must have been validated (parents come first).
func (p *Process) SeccompChain(th *Thread) []int {
	var ids []int
	for id := th.SeccompFilter; id > 0 && id <= len(p.Seccomp); id = p.Seccomp[id-1].Parent {
		ids = append([]int{id}, ids...)
	}
	return ids
}
