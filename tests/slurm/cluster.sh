#!/bin/bash
# A real two-node Slurm cluster on this one machine (Debian's slurm packages, containers off), for tests and CI.
#
#   tests/slurm/cluster.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd node1 + node2
#   export SLURM_CONF=DIR/slurm.conf   # then sbatch/squeue/scontrol talk to it
#   tests/slurm/cluster.sh stop DIR    # stops the daemons by their pid files
#
# Needs root and: apt-get install -y slurmctld slurmd slurm-client munge
# Gives each node its own loopback address in /etc/hosts, "127.0.0.1 node1" and "127.0.0.2 node2" (replacing older
# node1/node2 lines), so a job whose master is not its first node's address fails as it would on two machines.
# proctrack/linuxproc: a signal to a step reaches every process below it, as proctrack/cgroup on a real cluster
# (torchrun's workers and DataLoader workers included).
# cred_expire=10: a requeued job starts again after ~11 s instead of Slurm's default ~2 min.
# Every wait is bounded; `start` fails (and stops what it started) when the nodes are not idle within 60 s.
set -euo pipefail

ACTION=${1:?usage: cluster.sh start|stop DIR}
DIR=$(mkdir -p "${2:?usage: cluster.sh start|stop DIR}" && cd "$2" && pwd)
CPUS=${SLURM_TEST_CPUS:-2}
PORT_BASE=${SLURM_TEST_PORT_BASE:-17000}

stop() {
    for pidfile in "$DIR"/slurmd-node1.pid "$DIR"/slurmd-node2.pid "$DIR"/slurmctld.pid "$DIR"/munged.pid; do
        [[ -f "$pidfile" ]] || continue
        pid=$(cat "$pidfile")
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

if [[ "$ACTION" == stop ]]; then
    stop
    exit 0
fi
[[ "$ACTION" == start ]] || { echo "usage: cluster.sh start|stop DIR" >&2; exit 2; }
for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null || { echo "cluster.sh: $tool missing: apt-get install -y slurmctld slurmd slurm-client munge" >&2; exit 3; }
done
if [[ "$(grep -wE 'node1|node2' /etc/hosts || true)" != $'127.0.0.1 node1\n127.0.0.2 node2' ]]; then
    # rewrite in place (a container's /etc/hosts is a bind mount: no rename, so no sed -i)
    hosts=$(grep -vwE 'node1|node2' /etc/hosts || true)
    printf '%s\n127.0.0.1 node1\n127.0.0.2 node2\n' "$hosts" > /etc/hosts
fi

mkdir -p "$DIR/state" "$DIR/log"
# munge: a private key, socket and pid file, so this cluster never touches a system munged.
if [[ ! -f "$DIR/munge.key" ]]; then
    head -c 1024 /dev/urandom > "$DIR/munge.key"
    chmod 400 "$DIR/munge.key"
fi
munged --force --key-file="$DIR/munge.key" --socket="$DIR/munge.socket" --pid-file="$DIR/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munged.seed"

cat > "$DIR/slurm.conf" <<CONF
ClusterName=volotest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$((PORT_BASE))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket,cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool_%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=30
MinJobAge=600
NodeName=node1 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$((PORT_BASE + 1)) CPUs=$CPUS RealMemory=4000
NodeName=node2 NodeHostname=$(hostname) NodeAddr=127.0.0.2 Port=$((PORT_BASE + 2)) CPUs=$CPUS RealMemory=4000
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
CONF
export SLURM_CONF="$DIR/slurm.conf"

slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF" -N node1
slurmd -f "$SLURM_CONF" -N node2

for _ in $(seq 60); do
    idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle' || true)
    [[ "$idle" == 2 ]] && { echo "cluster.sh: 2 nodes idle (SLURM_CONF=$SLURM_CONF)"; exit 0; }
    sleep 1
done
echo "cluster.sh: nodes not idle after 60 s:" >&2
sinfo -N >&2 || true
tail -n 20 "$DIR"/log/*.log >&2 || true
stop
exit 1
