#!/bin/sh
# A Slurm batch job that survives preemption and time limits with chpox
# (docs/slurm.md). Submit it with the app and its arguments:
#
#   sbatch --requeue --open-mode=append --signal=B:USR2@120 slurm-job.sh ./app ARGS
#
# The first run execs `chpox run`, so the USR2 Slurm sends to this script
# reaches chpox, which writes a checkpoint of the app while it runs on.
# A requeued run (SLURM_RESTART_COUNT > 0) finds the image and restores the
# app from it, on whichever node it lands. CHPOX_IMAGE names the image
# (default: chpox-JOBID.chp in the submit directory, on a shared file
# system for more than one node); CHPOX the chpox binary.
chpox=${CHPOX:-chpox}
img=${CHPOX_IMAGE:-${SLURM_SUBMIT_DIR:-.}/chpox-${SLURM_JOB_ID}.chp}
echo "chpox job ${SLURM_JOB_ID}: run $((${SLURM_RESTART_COUNT:-0} + 1)) on $(hostname)"
if [ -f "$img" ]; then
	exec "$chpox" restore "$img"
fi
exec "$chpox" run --signal USR2 -o "$img" -- "$@"
