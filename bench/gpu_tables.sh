#!/usr/bin/env bash
# Quality tables on one GPU: one `bench.quality --device cuda` process per (table, seed), all at once, then one
# merged JSON per table. A small model's steps are launch-bound (the GPU idles between its tiny kernels), so
# processes side by side, one CPU core each, share the GPU well.
#
#   bash bench/gpu_tables.sh OUT_DIR 'NAME: BENCH.QUALITY ARGUMENTS' ...
#   bash bench/gpu_tables.sh /tmp/t 'fashion-classwise: --dataset fashion --scenario classwise --augmentation crop_flip'
#
# Per table and seed: OUT_DIR/NAME-seedS.json (written after every base method, so a process stopped at
# LIMIT_S keeps what it measured) and its log; then OUT_DIR/NAME.json merged over the seeds that wrote one.
# SEEDS (default "0 1 2"), LIMIT_S (default 3600: each process's time limit), PYTHON (default python3), DEVICE
# (default cuda; cpu runs it anywhere, e.g. to try a table list with --dataset digits).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/gpu_tables.sh OUT_DIR 'NAME: ARGUMENTS' ...}
shift
mkdir -p "$out"
PY=${PYTHON:-python3}

for table in "$@"; do
  name=${table%%:*}
  for seed in ${SEEDS:-0 1 2}; do
    # eval: the arguments may hold quoted JSON (--architecture-kwargs '{"in_chans": 1}').
    eval "OMP_NUM_THREADS=1 timeout ${LIMIT_S:-3600} $PY -u -m bench.quality ${table#*:} --seed-list $seed \
      --device ${DEVICE:-cuda} --json $out/$name-seed$seed.json" >"$out/$name-seed$seed.log" 2>&1 &
  done
done
wait

for table in "$@"; do
  name=${table%%:*}
  files=$(ls "$out/$name"-seed*.json 2>/dev/null)
  # shellcheck disable=SC2086  # one path per seed
  [[ -n $files ]] && $PY -m bench.quality --merge $files --json "$out/$name.json"
done
