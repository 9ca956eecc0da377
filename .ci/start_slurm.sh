#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine (CI, or a workstation for trying the Slurm
# profile). Installs slurm-wlm + munge when missing, writes a minimal /etc/slurm/slurm.conf,
# starts munged, slurmctld and slurmd, and waits until a test job completes. Idempotent: when the
# node already answers and runs a job, it does nothing. No systemd needed; no job accounting
# (status comes from squeue, see workflow/profiles/slurm/config.yaml).
# An existing slurm.conf that this script did not write is never touched.
set -euo pipefail

MARK="# written by .ci/start_slurm.sh"
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)
WAIT_S=${SLURM_START_TIMEOUT:-60}

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
as_root() { "${SUDO[@]}" "$@"; }
log() { echo "start_slurm: $*" >&2; }

# The node is up when it is in a usable state and a trivial batch job runs to completion.
node_ready() {
    local state
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1) || return 1
    case "$state" in idle|mixed|allocated|completing) ;; *) return 1 ;; esac
}
job_runs() {
    timeout 30 sbatch --quiet --wait --output=/dev/null --job-name=start_slurm_probe \
        --wrap true >/dev/null 2>&1 && return 0
    scancel --name=start_slurm_probe >/dev/null 2>&1 || true
    return 1
}

if pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null && node_ready && job_runs; then
    log "Slurm already up on $NODE"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: key, runtime dirs, daemon.
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    as_root mkdir -p /etc/munge
    as_root dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
as_root mkdir -p /run/munge /var/lib/munge /var/log/munge
as_root chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
as_root chmod 0700 /etc/munge
as_root chmod 0400 /etc/munge/munge.key
as_root chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    as_root runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || { log "munged does not answer"; exit 1; }
fi

# slurm.conf: one node named after this host, all its CPUs, 90% of the available memory.
if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
    log "$CONF exists and was not written by this script: leaving it alone"
    exit 1
fi
CPUS=$(nproc)
MEM_MB=$(awk '/^MemAvailable:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
GPUS=0
if command -v nvidia-smi >/dev/null; then
    GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi
GRES_NODE=""
GRES_TYPES=""
if [ "$GPUS" -gt 0 ]; then
    GRES_NODE="Gres=gpu:$GPUS"
    GRES_TYPES="GresTypes=gpu"
    printf '%s\nNodeName=%s Name=gpu File=/dev/nvidia[0-%d]\n' "$MARK" "$NODE" "$((GPUS - 1))" \
        | as_root tee /etc/slurm/gres.conf >/dev/null
fi
as_root mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
as_root tee "$CONF" >/dev/null <<EOF
$MARK
ClusterName=reidpipe
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# squeue is the job-status source (no accounting): keep finished jobs visible for 5 minutes.
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

if ! pgrep -x slurmctld >/dev/null; then
    log "starting slurmctld"
    as_root /usr/sbin/slurmctld
else
    as_root scontrol reconfigure
fi
if ! pgrep -x slurmd >/dev/null; then
    log "starting slurmd"
    as_root /usr/sbin/slurmd
fi

deadline=$((SECONDS + WAIT_S))
until node_ready; do
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
        drain*|down*) as_root scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        log "node $NODE not idle after ${WAIT_S}s (state: ${state:-none}); logs in /var/log/slurm"
        sinfo -N -l >&2 || true
        exit 1
    fi
    sleep 0.5
done
if ! job_runs; then
    log "a test job (sbatch --wrap true) did not complete; logs in /var/log/slurm"
    exit 1
fi
log "Slurm up: node $NODE, $CPUS CPUs, ${MEM_MB} MB, $GPUS GPUs, partition debug"
