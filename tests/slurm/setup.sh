#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine for tests/test_slurm.py.
#
# Installs Debian's slurm-wlm and munge when missing (apt-get, as root), writes
# a slurm.conf for one node with two partitions (cpu, the default, and gpu, as
# the SLURM profile expects), starts munged, slurmctld and slurmd as root and
# waits until `sinfo` shows the node idle. Everything lives under one state
# folder, with its own ports and munge socket; the one system-wide change
# beyond the packages is /etc/slurm/slurm.conf, a link to that folder's
# slurm.conf, because the executor plugin's job steps drop SLURM_CONF and srun
# then looks there (it is only made where no slurm.conf exists, and teardown
# removes it). Running this again while the cluster is up does nothing. Stop
# it with tests/slurm/teardown.sh.
#
#   tests/slurm/setup.sh && export SLURM_CONF=/tmp/rankcollapse-slurm/etc/slurm.conf
#
# Environment: RANKCOLLAPSE_SLURM_DIR (state folder, default
# /tmp/rankcollapse-slurm), RANKCOLLAPSE_SLURM_PORT (slurmctld port, default
# 6917; slurmd uses the next one).
set -euo pipefail

STATE=${RANKCOLLAPSE_SLURM_DIR:-/tmp/rankcollapse-slurm}
PORT=${RANKCOLLAPSE_SLURM_PORT:-6917}
CONF=$STATE/etc/slurm.conf
export SLURM_CONF=$CONF

say() { echo "slurm setup: $*" >&2; }
started=0
die() {  # a failed start stops what it started and keeps the logs
    if [[ $started == 1 ]]; then
        RANKCOLLAPSE_SLURM_KEEP=1 "$(dirname "$0")/teardown.sh" >/dev/null 2>&1
    fi
    say "$*"
    exit 1
}

node_state() { timeout 10 sinfo -h -N -o %t 2>/dev/null | head -n 1 || true; }

# ---------------------------------------------------------------------------
# Already up: nothing to do.

if [[ -f $CONF ]] && command -v sinfo >/dev/null && [[ $(node_state) == idle ]]; then
    say "cluster already up ($CONF)"
    exit 0
fi

# ---------------------------------------------------------------------------
# Packages.

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    [[ $(id -u) == 0 ]] || die "slurm-wlm and munge are missing; installing them needs root"
    command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and there is no apt-get"
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Package scripts must not start the system-wide services: this cluster
    # runs from its own state folder.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    { apt-get install -y -q --no-install-recommends slurm-wlm munge \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends \
            slurm-wlm munge; }; } >"${TMPDIR:-/tmp}/rankcollapse-slurm-apt.log" 2>&1 \
        || { [[ $own_policy == 1 ]] && rm -f "$policy"
             die "apt-get failed; see ${TMPDIR:-/tmp}/rankcollapse-slurm-apt.log"; }
    [[ $own_policy == 1 ]] && rm -f "$policy"
fi
[[ $(id -u) == 0 ]] || die "slurmd must run as root to start jobs; run this as root"

# srun inside a job finds the configuration only at the default path, which
# must be free or already this cluster's link.
SYSCONF=/etc/slurm/slurm.conf
if [[ -e $SYSCONF || -L $SYSCONF ]] \
    && ! [[ -L $SYSCONF && $(readlink "$SYSCONF") == "$CONF" ]]; then
    die "$SYSCONF exists and is not this test cluster's; not touching a real cluster"
fi

# ---------------------------------------------------------------------------
# A clean state folder: stop whatever an earlier, half-started run left.

"$(dirname "$0")/teardown.sh" >/dev/null 2>&1 || true
rm -rf "$STATE"
mkdir -p "$STATE"/{etc,munge,ctld,spool,log,run}
chmod 755 "$STATE/munge"  # clients of any user reach the socket

# ---------------------------------------------------------------------------
# munge: its own key and socket.

dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$STATE/munge/munge.key"
started=1
munged --force \
    --key-file="$STATE/munge/munge.key" \
    --socket="$STATE/munge/munge.socket" \
    --pid-file="$STATE/run/munged.pid" \
    --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed" \
    || die "munged did not start; see $STATE/log/munged.log"

# ---------------------------------------------------------------------------
# slurm.conf: one node with the hardware slurmd detects, no accounting daemon.

host=$(hostname -s)
hardware=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //; s/ UpTime=.*//')
[[ -n $hardware ]] || die "slurmd -C reported no hardware"

cat >"$CONF" <<EOF
# Single-node test cluster written by tests/slurm/setup.sh.
ClusterName=rankcollapse
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue for 5 minutes: with no slurmdbd, squeue
# is how the executor plugin learns that a job has ended.
MinJobAge=300
SchedulerParameters=sched_interval=2
# Two GPUs in name only (their device files are /dev/null and /dev/zero, see
# gres.conf), so that jobs that ask for a GPU (sbatch --gpus=1) are scheduled,
# two at a time like the node's two CPUs; they run on the CPU.
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 $hardware Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF

cat >"$STATE/etc/gres.conf" <<EOF
NodeName=$host Name=gpu File=/dev/null,/dev/zero
EOF

mkdir -p "$(dirname "$SYSCONF")"
ln -sfn "$CONF" "$SYSCONF"

# ---------------------------------------------------------------------------
# Daemons, then wait for the node.

slurmctld -f "$CONF" || die "slurmctld did not start; see $STATE/log/slurmctld.log"
slurmd -f "$CONF" || die "slurmd did not start; see $STATE/log/slurmd.log"

for _ in $(seq 60); do
    if [[ $(node_state) == idle ]]; then
        say "cluster up: node $host idle; export SLURM_CONF=$CONF"
        exit 0
    fi
    sleep 1
done
sinfo >&2 || true
die "node did not become idle in 60 s; see $STATE/log/"
