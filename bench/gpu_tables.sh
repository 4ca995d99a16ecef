#!/usr/bin/env bash
# Quality tables on one GPU: a `bench.quality --device cuda` process per (table, seed), JOBS at a time (default 1),
# then one merged JSON per table. One at a time, because processes side by side on one GPU time-slice it between
# their CUDA contexts: on an H200, 15 of them finished no method in 400 s, where one alone ran a whole
# Fashion-MNIST class-wise cell (retrain, two bases, two curves) in 200 s (docs/benchmarks.md, "On a GPU").
#
#   bash bench/gpu_tables.sh OUT_DIR 'NAME: BENCH.QUALITY ARGUMENTS' ...
#   bash bench/gpu_tables.sh /tmp/t 'fashion-classwise: --dataset fashion --scenario classwise --augmentation crop_flip'
#
# Per table and seed: OUT_DIR/NAME-seedS.json (written after every base method, so a process stopped at
# LIMIT_S keeps what it measured) and its log; then OUT_DIR/NAME.json merged over the seeds that wrote one.
# SEEDS (default "0 1 2"), LIMIT_S (default 3600: each process's time limit), JOBS, PYTHON (default python3),
# DEVICE (default cuda; cpu runs it anywhere, e.g. to try a table list with --dataset digits).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/gpu_tables.sh OUT_DIR 'NAME: ARGUMENTS' ...}
shift
mkdir -p "$out"
PY=${PYTHON:-python3}

running=0
for table in "$@"; do
  name=${table%%:*}
  for seed in ${SEEDS:-0 1 2}; do
    if ((running >= ${JOBS:-1})); then
      wait -n
      running=$((running - 1))
    fi
    # eval: the arguments may hold quoted JSON (--architecture-kwargs '{"in_chans": 1}').
    eval "OMP_NUM_THREADS=1 timeout ${LIMIT_S:-3600} $PY -u -m bench.quality ${table#*:} --seed-list $seed \
      --device ${DEVICE:-cuda} --json $out/$name-seed$seed.json" >"$out/$name-seed$seed.log" 2>&1 &
    running=$((running + 1))
  done
done
wait

for table in "$@"; do
  name=${table%%:*}
  files=$(ls "$out/$name"-seed*.json 2>/dev/null)
  # shellcheck disable=SC2086  # one path per seed
  [[ -n $files ]] && $PY -m bench.quality --merge $files --json "$out/$name.json"
done
