#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the Slurm tests (tests/cluster/) and CI.
#
#   tests/cluster/slurm-local.sh start    # munge, MariaDB, slurmdbd, slurmctld, slurmd; waits for idle
#   tests/cluster/slurm-local.sh stop     # cancels jobs, stops what `start` started, waits on pids
#   tests/cluster/slurm-local.sh status   # exit 0 when the cluster answers
#   tests/cluster/slurm-local.sh env      # prints `export SLURM_CONF=...` for the shell
#
# Needs root and the Debian packages slurmctld slurmd slurm-client munge slurmdbd mariadb-server.
# Everything lives in $BADBLOCK_SLURM_DIR (default /tmp/badblock-slurm): configs, state, logs,
# the database and the pid files of the daemons this script started. The system's /etc/slurm is
# not touched: clients find the config through SLURM_CONF=$BADBLOCK_SLURM_DIR/etc/slurm.conf.
# A munged that was already running is used and left running.
#
# The node offers $BADBLOCK_SLURM_CPUS task slots (default 4: more than the cores of a small CI
# machine, for the two-task tests, and fewer than the 8 CPUs a DGX-minded template might ask
# for, so that the tests catch a template default that does not fit a small node) and $BADBLOCK_SLURM_GPUS fake GPUs (gres gpu, character
# devices equal to /dev/null) so that `--gres=gpu:N` is accepted; there is no GPU behind them.
set -euo pipefail

DIR=${BADBLOCK_SLURM_DIR:-/tmp/badblock-slurm}
NODE=$(hostname -s)
CPUS=${BADBLOCK_SLURM_CPUS:-4}
GPUS=${BADBLOCK_SLURM_GPUS:-2}
DB_PORT=${BADBLOCK_SLURM_DB_PORT:-33061}
CONF=$DIR/etc/slurm.conf
STARTED=$DIR/started   # pid files of the daemons *this script* started (daemons delete their own)

log() { echo "slurm-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "timed out after ${limit}s waiting for $what (logs: $DIR/log)"
    sleep 0.3
  done
}

record() {  # record NAME PIDFILE: remember the pid of a daemon we started
  local name=$1 pidfile=$2
  wait_for 20 "$name pid file $pidfile" test -s "$pidfile"
  cp "$pidfile" "$STARTED/$name.pid"
}

write_configs() {
  local mem_mb
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  mkdir -p "$DIR"/{etc,log,pids,slurmctld,slurmd,dev,mysql,run} "$STARTED"
  local last=$((GPUS - 1)) i
  for ((i = 0; i < GPUS; i++)); do
    [ -e "$DIR/dev/fakegpu$i" ] || mknod "$DIR/dev/fakegpu$i" c 1 3
  done
  cat > "$CONF" <<EOF
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job starts again after about 10 s instead of 120 s.
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/slurmctld
SlurmdSpoolDir=$DIR/slurmd
SlurmctldPidFile=$DIR/pids/slurmctld.pid
SlurmdPidFile=$DIR/pids/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
CommunicationParameters=NoInAddrAny
ReturnToService=2
KillWait=10
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((mem_mb / CPUS))
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if [ "$GPUS" -gt 0 ]; then
    printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/dev/fakegpu[0-%d]\n' \
      "$NODE" "$DIR" "$last" > "$DIR/etc/gres.conf"
  else
    sed -i -e 's/ Gres=gpu:0//' "$CONF"
    : > "$DIR/etc/gres.conf"
  fi
  cat > "$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DIR/pids/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=badblock-local
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "using the munged that is already running"
    return
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  chown munge: /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- /usr/sbin/mungekey --create
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  record munged /run/munge/munged.pid
  wait_for 20 munge sh -c 'munge -n | unmunge'
}

start_mariadb() {
  local sock=$DIR/run/mysqld.sock
  chown mysql: "$DIR/mysql" "$DIR/run"
  if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
      > "$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $DIR/log/mariadb-install.log"
  fi
  setsid mariadbd --user=mysql --datadir="$DIR/mysql" --socket="$sock" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadb.log" \
    --skip-log-bin </dev/null >/dev/null 2>&1 &
  record mariadbd "$DIR/run/mariadbd.pid"
  wait_for 60 MariaDB mariadb --socket="$sock" -e 'SELECT 1'
  mariadb --socket="$sock" <<'EOF'
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'badblock-local';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'badblock-local';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (Slurm daemons, munge, MariaDB)"
  for cmd in slurmctld slurmd slurmdbd sbatch munged mariadbd; do
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || die "$cmd is missing: apt-get install" \
      "slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
  done
  if status >/dev/null 2>&1; then
    log "already running ($CONF)"; return
  fi
  # A fresh cluster every time: whatever an earlier run left (daemons of ours, jobs, job ids,
  # accounting records) would only confuse the tests.
  stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
  getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts
  write_configs
  export SLURM_CONF=$CONF
  start_munge
  start_mariadb
  rm -f "$DIR/pids/slurmdbd.pid"
  slurmdbd  # daemonises; reads slurmdbd.conf beside $SLURM_CONF
  record slurmdbd "$DIR/pids/slurmdbd.pid"
  wait_for 30 slurmdbd bash -c '</dev/tcp/127.0.0.1/6819'
  rm -f "$DIR/pids/slurmctld.pid"
  slurmctld -f "$CONF"
  record slurmctld "$DIR/pids/slurmctld.pid"
  wait_for 30 slurmctld scontrol ping
  rm -f "$DIR/pids/slurmd.pid"
  slurmd -f "$CONF" -N "$NODE"
  record slurmd "$DIR/pids/slurmd.pid"
  wait_for 60 "node $NODE idle" sh -c "sinfo -h -n '$NODE' -o %T | grep -qx idle"
  # The database must know the cluster before sacct can report anything.
  wait_for 30 "cluster registration" sh -c 'sacctmgr -n -P list cluster format=cluster | grep -qx local'
  log "up: export SLURM_CONF=$CONF"
}

stop_pid() {  # stop_pid NAME: TERM the daemon we started, wait on its pid (not its pid file)
  local name=$1 file=$STARTED/$1.pid pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  # A pid file from a machine's earlier life may name a process that is not ours any more.
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
    rm -f "$file"
    return 0
  fi
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
      if [ "$SECONDS" -ge "$end" ]; then
        log "$name ($pid) ignored SIGTERM for 30 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      sleep 0.2
    done
  fi
  rm -f "$file"
}

stop() {
  export SLURM_CONF=$CONF
  if [ -s "$STARTED/slurmctld.pid" ] && scontrol ping >/dev/null 2>&1; then
    # Cancel jobs first, so that no slurmstepd outlives slurmd.
    scancel --full --cluster=local --state=PENDING,RUNNING,SUSPENDED --user=root 2>/dev/null || true
    squeue -h -o %i | xargs -r scancel --full 2>/dev/null || true
    local end=$((SECONDS + 30))
    while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ "$SECONDS" -lt "$end" ]; do sleep 0.5; done
  fi
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    stop_pid "$name"
  done
  log "stopped"
}

status() {
  [ -f "$CONF" ] || return 1
  SLURM_CONF=$CONF scontrol ping >/dev/null 2>&1 &&
    SLURM_CONF=$CONF sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc'
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if status; then echo "up ($CONF)"; else echo "down"; exit 1; fi ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
