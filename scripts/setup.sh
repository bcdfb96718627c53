#!/bin/sh
# Installs the Debian packages the tests need, only those missing: gcc builds
# the test programs; python3, redis-server, nginx, node and postgresql (15,
# whose programs are not on PATH: /usr/lib/postgresql/15/bin) are real
# programs the e2e tests checkpoint; tmux drives interactive programs in the
# terminal tests; nftables is the packet filter chpox uses to hold TCP
# connections still while it dumps them; munge and Slurm run the batch
# system test; xfsprogs makes the XFS file system (shared blocks, reflink)
# on which the benchmark measures incremental checkpoints. Quick when all
# is there.
set -eu
missing=""
need() { # need COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}
need gcc "gcc libc6-dev"
need python3 python3
need redis-server redis-server
need redis-cli redis-tools
need nginx nginx-light
need node nodejs
need nft nftables
# A single-node Slurm of the test's own (TestSlurmRequeue): munge for its
# authentication, the controller, the node daemon and the client commands.
need munged munge
need slurmctld slurmctld
need slurmd slurmd
need sbatch slurm-client
need /usr/lib/postgresql/15/bin/postgres postgresql
need tmux tmux
need mkfs.xfs xfsprogs
[ -z "$missing" ] && exit 0

echo "setup: installing$missing"
# Installing a server package must not start it (there is no init system
# here, and a redis on 6379 or an nginx on 80 would outlive the tests):
# invoke-rc.d asks policy-rc.d, and 101 means "do not start".
own=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	own=1
fi
trap '[ -n "$own" ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
