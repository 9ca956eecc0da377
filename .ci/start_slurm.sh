#!/usr/bin/env bash
# Start a two-node Slurm cluster with fake GPUs on this machine (CI, or a workstation for trying
# the Slurm profile): slurmctld on this host, and one slurmd per compute node, each in a network
# and UTS namespace of its own (its own host name and address on a bridge, as two machines on a
# LAN), so that a job spanning both nodes really talks over the network. Each node declares two
# GPUs through gres.conf on device files made here (AutoDetect=off): --gpus/--gres requests are
# scheduled, and Slurm sets CUDA_VISIBLE_DEVICES as on a GPU cluster (there is no CUDA behind them).
#
# Installs slurm-wlm + munge when missing, writes /etc/slurm/slurm.conf and gres.conf, adds the
# node names to /etc/hosts, and waits until a job runs on both nodes. Safe to rerun: when the
# cluster already answers and runs that job, it does nothing; a missing daemon is started again.
# Needs root (or passwordless sudo) and network namespaces (`ip netns`). No systemd, no job
# accounting (status comes from squeue, see workflow/profiles/slurm/config.yaml).
# An existing slurm.conf that this script did not write is never touched.
# On failure the reason also goes to $REASON_FILE, which the Slurm tests quote when they skip.
set -euo pipefail

MARK="# written by .ci/start_slurm.sh"
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
CONTROLLER=$(hostname -s)
NODES=(rp-node1 rp-node2)
SUBNET=${SLURM_TEST_SUBNET:-10.77.0}   # the bridge is .1, node i is .(i+2)
BRIDGE=rpslurm0
GPUS_PER_NODE=2
CPUS_PER_NODE=8   # declared, not counted: lets a rule's `threads:` fit on a small CI machine
DEVICE_DIR=/dev/reidpipe-fake-gpu
REASON_FILE=/var/tmp/reidpipe-start-slurm.reason
WAIT_S=${SLURM_START_TIMEOUT:-90}

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
as_root() { "${SUDO[@]}" "$@"; }
log() { echo "start_slurm: $*" >&2; }
fail() {
    log "$*"
    echo "$*" | as_root tee "$REASON_FILE" >/dev/null 2>&1 || true
    exit 1
}
node_addr() { echo "$SUBNET.$(($1 + 2))"; }

# Ready: every node in a usable state, and one job with a task on each node runs to completion.
nodes_ready() {
    local states
    states=$(sinfo -h -N -o %T 2>/dev/null | sort -u) || return 1
    [ "$(sinfo -h -N -o %N 2>/dev/null | sort -u | wc -l)" -eq "${#NODES[@]}" ] || return 1
    ! grep -qvE '^(idle|mixed|allocated|completing)$' <<<"$states"
}
job_runs() {
    timeout 30 sbatch --quiet --wait --output=/dev/null --job-name=start_slurm_probe \
        --nodes="${#NODES[@]}" --ntasks-per-node=1 --wrap "srun true" >/dev/null 2>&1 && return 0
    scancel --name=start_slurm_probe >/dev/null 2>&1 || true
    return 1
}
slurmd_running() {  # $1: node name
    local pid
    pid=$(cat "/run/slurmd-$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

if pgrep -x slurmctld >/dev/null && nodes_ready && job_runs; then
    as_root rm -f "$REASON_FILE"
    log "Slurm already up: nodes ${NODES[*]}"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || fail "apt-get update failed: cannot install slurm-wlm"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
        || fail "apt-get install slurm-wlm munge failed"
fi
command -v ip >/dev/null || fail "the ip command (iproute2) is missing: no network namespaces"
command -v unshare >/dev/null && command -v nsenter >/dev/null \
    || fail "unshare or nsenter (util-linux) is missing"

# munge: key, runtime dirs, daemon (its socket is a file, so every namespace reaches it).
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
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munged does not answer"
fi

if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
    fail "$CONF exists and was not written by this script: leaving it alone"
fi

# The network: a bridge on this host, one namespace per node with a veth into the bridge.
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    as_root ip link add "$BRIDGE" type bridge || fail "cannot create bridge $BRIDGE (no CAP_NET_ADMIN?)"
fi
ip -4 addr show dev "$BRIDGE" | grep -qF "$SUBNET.1/24" \
    || as_root ip addr add "$SUBNET.1/24" dev "$BRIDGE"
as_root ip link set "$BRIDGE" up
for i in "${!NODES[@]}"; do
    node=${NODES[$i]}
    veth="rpv-${node#rp-}"
    if ! ip netns list | grep -qw "$node"; then
        as_root ip netns add "$node" || fail "cannot create network namespace $node"
    fi
    if ! as_root ip netns exec "$node" ip link show eth0 >/dev/null 2>&1; then
        as_root ip link del "$veth" >/dev/null 2>&1 || true
        as_root ip link add "$veth" type veth peer name "$veth-p" \
            || fail "cannot create veth pair $veth"
        as_root ip link set "$veth-p" netns "$node"
        as_root ip netns exec "$node" ip link set "$veth-p" name eth0
        as_root ip netns exec "$node" ip addr add "$(node_addr "$i")/24" dev eth0
    fi
    as_root ip link set "$veth" master "$BRIDGE"
    as_root ip link set "$veth" up
    as_root ip netns exec "$node" ip link set lo up
    as_root ip netns exec "$node" ip link set eth0 up
    # Node names resolve from every namespace (Lightning's MASTER_ADDR is the first node's name).
    line="$(node_addr "$i") $node"
    grep -qxF "$line" /etc/hosts || {
        grep -vw "$node" /etc/hosts > /tmp/hosts.$$ || true
        echo "$line" >> /tmp/hosts.$$
        as_root cp /tmp/hosts.$$ /etc/hosts
        rm -f /tmp/hosts.$$
    }
done

# Fake GPUs: character devices (those of /dev/null), GPUS_PER_NODE a node.
GRES_LINES=""
for node in "${NODES[@]}"; do
    as_root mkdir -p "$DEVICE_DIR/$node"
    for g in $(seq 0 $((GPUS_PER_NODE - 1))); do
        [ -c "$DEVICE_DIR/$node/gpu$g" ] || as_root mknod "$DEVICE_DIR/$node/gpu$g" c 1 3 \
            || fail "cannot create the fake GPU device $DEVICE_DIR/$node/gpu$g"
    done
    GRES_LINES+="NodeName=$node Name=gpu File=$DEVICE_DIR/$node/gpu[0-$((GPUS_PER_NODE - 1))]"$'\n'
done
printf '%s\nAutoDetect=off\n%s' "$MARK" "$GRES_LINES" | as_root tee "$GRES_CONF" >/dev/null

MEM_MB=$(awk -v n="${#NODES[@]}" '/^MemAvailable:/ {printf "%d", $2 / 1024 * 0.9 / n}' /proc/meminfo)
NODE_LINES=""
for i in "${!NODES[@]}"; do
    NODE_LINES+="NodeName=${NODES[$i]} NodeAddr=$(node_addr "$i") CPUs=$CPUS_PER_NODE"
    NODE_LINES+=" RealMemory=$MEM_MB Gres=gpu:$GPUS_PER_NODE State=UNKNOWN"$'\n'
done
as_root mkdir -p /etc/slurm /var/spool/slurmctld /var/log/slurm
new_conf=$(cat <<EOF
$MARK
ClusterName=reidpipe
SlurmctldHost=$CONTROLLER($SUBNET.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# The nodes declare CPUs and memory the machine may not have: trust the config, not the count.
SlurmdParameters=config_overrides
ReturnToService=2
# squeue is the job-status source (no accounting): keep finished jobs visible for 5 minutes.
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
GresTypes=gpu
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmdSpoolDir=/var/spool/slurmd/%n
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
${NODE_LINES}PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP
EOF
)
changed=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" | as_root tee "$CONF" >/dev/null
    changed=1
fi
# A slurmd of the former single-node setup (this host as the node) has no place in this one.
old_pid=$(cat /run/slurmd.pid 2>/dev/null || true)
if [ -n "$old_pid" ] && kill -0 "$old_pid" 2>/dev/null; then
    log "stopping the single-node slurmd (pid $old_pid)"
    as_root kill "$old_pid"
    as_root rm -f /run/slurmd.pid
fi

if ! pgrep -x slurmctld >/dev/null; then
    log "starting slurmctld"
    as_root /usr/sbin/slurmctld || fail "slurmctld did not start; see /var/log/slurm/slurmctld.log"
elif [ "$changed" -eq 1 ]; then
    as_root scontrol reconfigure
fi
for node in "${NODES[@]}"; do
    if ! slurmd_running "$node"; then
        log "starting slurmd for $node"
        as_root mkdir -p "/var/spool/slurmd/$node"
        # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts slurmd reads.
        as_root nsenter --net="/run/netns/$node" unshare --uts \
            sh -c "hostname $node && exec /usr/sbin/slurmd -N $node" \
            || fail "slurmd for $node did not start; see /var/log/slurm/slurmd-$node.log"
    elif [ "$changed" -eq 1 ]; then
        as_root kill -HUP "$(cat "/run/slurmd-$node.pid")"
    fi
done

deadline=$((SECONDS + WAIT_S))
until nodes_ready; do
    for node in "${NODES[@]}"; do
        state=$(sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n1 || true)
        case "$state" in
            drain*|down*) as_root scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
        esac
    done
    if [ "$SECONDS" -ge "$deadline" ]; then
        sinfo -N -l >&2 || true
        fail "nodes ${NODES[*]} not idle after ${WAIT_S}s ($(sinfo -h -N -o '%N:%T' 2>/dev/null | tr '\n' ' ')); logs in /var/log/slurm"
    fi
    sleep 0.5
done
job_runs || fail "a job with one task on each node (sbatch --nodes=${#NODES[@]} --wrap 'srun true') did not complete; logs in /var/log/slurm"
as_root rm -f "$REASON_FILE"
log "Slurm up: nodes ${NODES[*]} ($SUBNET.2-$((${#NODES[@]} + 1))), $CPUS_PER_NODE CPUs, ${MEM_MB} MB and $GPUS_PER_NODE fake GPUs each, partition debug"
