#!/usr/bin/env bash
# Runs the README's sbatch script (scripts/sweep.sbatch) on a real,
# single-node Slurm cluster that this script starts on 127.0.0.1 and tears
# down again, and checks what a user relies on:
#   1. an array sweep trains every point exactly once and report sees all;
#   2. a task requeued mid-epoch (preemption) resumes from its last
#      finished epoch, to the numbers of an uninterrupted run;
#   3. a runner killed with SIGKILL (a node failure), then the same array
#      resubmitted: nothing done is redone, everything finishes;
#   4. successive halving as an array with --no-wait, resubmitted until
#      done, ends with the runs and bytes of a single-process halving.
#
#   scripts/slurm-check.sh [RUNNER_BINARY] [MNIST_DIR]
#
# Needs root (Debian's slurmctld, slurmd, slurm-client and munge are
# installed when missing). It never touches a cluster it did not start:
# its own munge socket and key, config, ports, state and logs live in a
# temporary folder, and only the daemons it started are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNER=$(realpath "${1:-target/release/runner}")
MNIST=$(realpath "${2:-${MNIST_DIR:-../shared/data/mnist}}")
export RUNNER
started=$(date +%s)

fail() { echo "slurm-check: FAILED: $*" >&2; exit 1; }
[ -x "$RUNNER" ] || fail "no runner binary at $RUNNER (cargo build --release)"
[ -f "$MNIST/train-images-idx3-ubyte.gz" ] || fail "no MNIST at $MNIST"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  echo "== installing slurmctld slurmd slurm-client munge"
  apt-get update -q >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
fi

tmp=$(mktemp -d /tmp/slurm-check.XXXXXX)
chmod 755 "$tmp"
cleanup() {
  local rc=$?
  for pidfile in "$tmp/slurmd.pid" "$tmp/slurmctld.pid" "$tmp/munged.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
  for pidfile in "$tmp/slurmd.pid" "$tmp/slurmctld.pid" "$tmp/munged.pid"; do
    [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  done
  if [ $rc -ne 0 ]; then
    echo "--- slurmctld log" >&2; tail -20 "$tmp/slurmctld.log" 2>/dev/null >&2 || true
    echo "--- slurmd log" >&2; tail -20 "$tmp/slurmd.log" 2>/dev/null >&2 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== starting munged, slurmctld, slurmd in $tmp"
mungekey -c -k "$tmp/munge.key"
munged --force --socket="$tmp/munge.sock" --key-file="$tmp/munge.key" \
  --pid-file="$tmp/munged.pid" --log-file="$tmp/munged.log" --seed-file="$tmp/munged.seed"
host=$(hostname -s)
port=$((17000 + RANDOM % 900))
cat >"$tmp/slurm.conf" <<EOF
ClusterName=runnercheck
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge.sock
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
mkdir -p "$tmp/state" "$tmp/spool"
export SLURM_CONF="$tmp/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  [ "$(sinfo -h -o %t 2>/dev/null)" = "idle" ] && break
  sleep 1
done
[ "$(sinfo -h -o %t)" = "idle" ] || fail "the node never came up idle: $(sinfo 2>&1)"
echo "node $host idle after $(( $(date +%s) - started )) s"

work="$tmp/work"
mkdir -p "$work"
# The grids: the quick grid on the data here, and a slower single point
# that a requeue can catch mid-epoch.
grid="$work/quick-grid.toml"
sed "s#^dir = .*#dir = \"$MNIST\"#" experiments/quick-grid.toml >"$grid"
grep -q "dir = \"$MNIST\"" "$grid" || fail "could not point the quick grid at $MNIST"
slow="$work/slow.toml"
cat >"$slow" <<EOF
name = "slow"
[spec.data]
dir = "$MNIST"
download = false
limit_train = 20000
limit_test = 1000
[spec.model]
activation = "relu"
pooling = "max"
[spec.train]
epochs = 6
lr = 0.01
threads = 1
[sweep]
"train.seed" = [4, 5]
EOF

# Submits the README's script as an array of N tasks; prints the job id.
submit() { # GRID RESULTS N [RUNNER ARGS...]
  local grid=$1 results=$2 n=$3
  shift 3
  (cd "$work" && sbatch --parsable --array="0-$((n - 1))" --cpus-per-task=1 \
    "$OLDPWD/scripts/sweep.sbatch" "$grid" "$results" "$@")
}
wait_job() { # JOBID
  for _ in $(seq 600); do
    [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
    sleep 0.5
  done
  fail "job $1 did not finish in 5 minutes: $(squeue)"
}
# Each run id in the logs given, with how often a "completed:" line follows it.
completions() { # LOG...
  awk '/^\[[0-9]+\/[0-9]+/ {id=$2} /^  completed:/ {n[id]++} END {for (i in n) print i, n[i]}' "$@" | sort
}

echo "== 1. the quick grid as an array of 4 tasks"
ms() { echo $(($(date +%s%N) / 1000000)); }
t0=$(ms)
job=$(submit "$grid" "$work/results" 4)
wait_job "$job"
array_ms=$(($(ms) - t0))
cat "$work"/slurm-"$job"_*.out >"$work/quick.log"
grep -q "FAILED\|error" "$work/quick.log" && fail "a task failed: $(cat "$work/quick.log")"
[ "$(completions "$work"/slurm-"$job"_*.out | wc -l)" = 4 ] || fail "not 4 runs trained: $(completions "$work"/slurm-"$job"_*.out)"
completions "$work"/slurm-"$job"_*.out | awk '$2 != 1 {exit 1}' || fail "a run trained twice"
report=$("$RUNNER" report "$work/results/quick-grid" --group-by none --format csv)
[ "$(echo "$report" | grep -c ',completed,')" = 4 ] || fail "report does not show 4 completed runs: $report"
t0=$(ms)
"$RUNNER" sweep "$grid" --results-dir "$work/one-process" >/dev/null
one_ms=$(($(ms) - t0))
echo "array of 4 tasks: $array_ms ms; the same grid in one process: $one_ms ms"

echo "phase 1 done after $(( $(date +%s) - started )) s"
echo "== 2. a task requeued mid-epoch resumes"
reference="$work/reference"
"$RUNNER" sweep "$slow" --results-dir "$reference" >/dev/null
job=$(submit "$slow" "$work/results" 2)
run_dir=""
for _ in $(seq 600); do
  run_dir=$(ls -d "$work"/results/slow/seed=4-* 2>/dev/null || true)
  [ -n "$run_dir" ] && [ "$(wc -l <"$run_dir/metrics.csv" 2>/dev/null || echo 0)" -ge 2 ] && break
  sleep 0.2
done
[ -n "$run_dir" ] || fail "the slow run never started"
scontrol requeue "${job}_0"
# Slurm holds a requeued job back (BeginTime) for two minutes or so
# before it may start again; once it is pending, let it start now.
for _ in $(seq 40); do
  state=$(squeue -h -j "${job}_0" -o %T 2>/dev/null || true)
  if [ "$state" = PENDING ]; then
    scontrol update jobid="${job}_0" StartTime=now >/dev/null 2>&1 && break
  fi
  sleep 0.5
done
rows_at_requeue=$(($(wc -l <"$run_dir/metrics.csv") - 1))
echo "requeued ${job}_0 after epoch $rows_at_requeue of 6"
[ "$rows_at_requeue" -lt 6 ] || fail "the requeue came after the run finished"
wait_job "$job"
grep -q "resuming" "$work/slurm-${job}_0.out" || fail "the requeued task did not resume: $(cat "$work/slurm-${job}_0.out")"
cut -d, -f1-6 "$run_dir/metrics.csv" >"$work/got.csv"
cut -d, -f1-6 "$reference"/slow/seed=4-*/metrics.csv >"$work/want.csv"
diff "$work/want.csv" "$work/got.csv" >/dev/null || fail "resumed metrics differ from an uninterrupted run: $(diff "$work/want.csv" "$work/got.csv")"
cmp -s "$run_dir/best.safetensors" "$reference"/slow/seed=4-*/best.safetensors || fail "best.safetensors differs from an uninterrupted run"
echo "resumed: 6 rows, the numbers and best.safetensors of an uninterrupted run"

echo "phase 2 done after $(( $(date +%s) - started )) s"
echo "== 3. a runner killed (node failure), the array resubmitted"
rm -rf "$work/results/slow"
job=$(submit "$slow" "$work/results" 2)
for _ in $(seq 600); do
  n=$(cat "$work"/results/slow/*/metrics.csv 2>/dev/null | grep -c '^[0-9]' || true)
  [ "$n" -ge 3 ] && break
  sleep 0.2
done
pkill -KILL -f "runner sweep $slow" || fail "no runner to kill"
wait_job "$job"
first=("$work"/slurm-"$job"_*.out)
job2=$(submit "$slow" "$work/results" 2)
wait_job "$job2"
completions "${first[@]}" "$work"/slurm-"$job2"_*.out >"$work/completions"
[ "$(wc -l <"$work/completions")" = 2 ] || fail "not both runs finished: $(cat "$work/completions")"
awk '$2 != 1 {exit 1}' "$work/completions" || fail "a run trained twice: $(cat "$work/completions")"
grep -q "resuming" "$work"/slurm-"$job2"_*.out || fail "the resubmitted array resumed nothing"
for d in "$work"/results/slow/*/; do
  [ "$(cut -d, -f1 "$d/metrics.csv" | tail -n +2 | tr '\n' ' ')" = "1 2 3 4 5 6 " ] || fail "$d: rows are not epochs 1-6 once each"
done
report=$("$RUNNER" report "$work/results/slow" --group-by none --format csv)
[ "$(echo "$report" | grep -c ',completed,')" = 2 ] || fail "report: $report"
echo "after the kill and resubmission: both runs completed once, rows 1-6 each"

echo "== 4. successive halving as an array with --no-wait, resubmitted until done"
halve="$work/halve.toml"
cat >"$halve" <<EOF
name = "halve"
[spec.data]
dir = "$MNIST"
download = false
limit_train = 2000
limit_test = 500
[spec.model]
activation = "relu"
pooling = "max"
[spec.train]
epochs = 3
threads = 1
[search]
halving = { min_epochs = 1, eta = 3 }
[sweep]
"train.lr" = [0.003, 0.01, 0.05]
"train.momentum" = [0.0, 0.5, 0.9]
EOF
"$RUNNER" sweep "$halve" --results-dir "$work/halve-reference" >/dev/null 2>&1
done_halving=""
for attempt in 1 2 3 4 5 6; do
  job=$(submit "$halve" "$work/results" 3 --no-wait)
  wait_job "$job"
  if grep -q "halving done" "$work"/slurm-"$job"_*.out; then
    done_halving=$attempt
    break
  fi
done
[ -n "$done_halving" ] || fail "halving did not finish in 6 submissions"
for ref in "$work"/halve-reference/halve/*/; do
  got="$work/results/halve/$(basename "$ref")"
  diff <(cut -d, -f1-6 "$ref/metrics.csv") <(cut -d, -f1-6 "$got/metrics.csv") >/dev/null ||
    fail "$got: metrics differ from the single-process halving"
  cmp -s "$ref/best.safetensors" "$got/best.safetensors" || fail "$got: best.safetensors differs"
done
echo "halving done after $done_halving submission(s) of a 3-task array with --no-wait: the runs and bytes of one process"

echo "slurm-check: passed in $(( $(date +%s) - started )) s"
