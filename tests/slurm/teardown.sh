#!/usr/bin/env bash
# Stop the single-node SLURM cluster that tests/slurm/setup.sh started: slurmd,
# slurmctld and munged, each by the process id in its pid file, then remove the
# state folder and the /etc/slurm/slurm.conf link to it. Safe to run when
# nothing is running.
#
# Environment: RANKCOLLAPSE_SLURM_DIR (default /tmp/rankcollapse-slurm);
# RANKCOLLAPSE_SLURM_KEEP=1 keeps the state folder (logs) for inspection.
set -uo pipefail

STATE=${RANKCOLLAPSE_SLURM_DIR:-/tmp/rankcollapse-slurm}

stop() {  # stop <name>: SIGTERM the pid in $STATE/run/<name>.pid, wait, SIGKILL
    local pidfile=$STATE/run/$1.pid pid
    [[ -f $pidfile ]] || return 0
    pid=$(<"$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        echo "slurm teardown: stopped $1 ($pid)" >&2
    fi
    rm -f "$pidfile"
}

stop slurmd
stop slurmctld
stop munged
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$STATE"/* ]]; then
    rm -f /etc/slurm/slurm.conf
fi
[[ ${RANKCOLLAPSE_SLURM_KEEP:-0} == 1 ]] || rm -rf "$STATE"
exit 0
