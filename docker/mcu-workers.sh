#!/usr/bin/env bash
# The worker image's command: one `mcu worker` process per GPU, each pinned to its GPU with
# CUDA_VISIBLE_DEVICES; with MCU_DEVICES_PER_JOB=N (or all), one per group of N GPUs (or one for all of them),
# whose jobs train on the group's N GPUs (docs/scaling.md). The GPUs: CUDA_VISIBLE_DEVICES if it lists some
# (e.g. 2,3), else ("all" or unset) every GPU the container was given (compose's MCU_GPUS_PER_WORKER,
# `docker run --gpus`). With one GPU, or none (CPU fallback), this simply execs `mcu worker`. Each `mcu worker`
# consumes the gpu queue and starts a CPU-only child for the control queue (model checks, clean-ups, callback
# retries), so those never wait behind a job; `docker stop` reaches the child through its worker.
# Arguments go to every `mcu worker`. With MCU_WORKER_METRICS_PORT set, each process serves its metrics on a
# port of its own: that port for the first group's, the next ones for the others (9101, 9102, ...).
set -euo pipefail

if [[ ${CUDA_VISIBLE_DEVICES:-all} == all ]]; then
  unset CUDA_VISIBLE_DEVICES
  count=$(python -c 'import torch; print(torch.cuda.device_count())')
  gpus=()
  for ((i = 0; i < count; i++)); do gpus+=("$i"); done
else
  IFS=, read -ra gpus <<<"$CUDA_VISIBLE_DEVICES"
fi

per_job=${MCU_DEVICES_PER_JOB:-1}
if [[ $per_job == all ]] || ((per_job > ${#gpus[@]})); then
  per_job=${#gpus[@]}
fi
if ((${#gpus[@]} <= per_job)); then
  exec mcu worker "$@"
fi

pids=()
for ((i = 0; i * per_job < ${#gpus[@]}; i++)); do
  group=$(IFS=,; echo "${gpus[*]:i*per_job:per_job}")
  metrics=()
  if [[ -n ${MCU_WORKER_METRICS_PORT:-} ]]; then
    metrics=("MCU_WORKER_METRICS_PORT=$((MCU_WORKER_METRICS_PORT + i))")
  fi
  env CUDA_VISIBLE_DEVICES="$group" "${metrics[@]}" mcu worker --name "mcu@$(hostname)-gpu${group//,/-}" "$@" &
  pids+=("$!")
done
# docker stop sends TERM to this script: pass it on. When any worker exits, stop the others too, so
# the container exits and its restart policy brings all of them back.
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT
status=0
wait -n "${pids[@]}" || status=$?
kill -TERM "${pids[@]}" 2>/dev/null || true
wait "${pids[@]}" || true
exit "$status"
