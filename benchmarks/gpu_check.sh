#!/usr/bin/env bash
# One call on a CUDA machine checks what the CPU suite cannot (run from the repository root):
#   1. 2 minutes of training with bf16 autocast + channels_last, stopped by SIGTERM (interrupted.pt, exit 130),
#   2. one resume of that run for a few more steps (exit 0, start step = the interrupted step),
#   3. 2 minutes with fp16 autocast + GradScaler (losses finite, exit 130 after SIGTERM),
#   4. 2-process NCCL DDP under torchrun for a few steps, when 2 or more GPUs are visible,
#   5. benchmarks/train_speed.py --gpu-only: steps/s of the trainer (bf16 + channels_last) vs plain fp32
#      eager at 128 px, batch 16, and the largest batch that fits at 128 px,
#   6. QUALITY_S (600) seconds of the default preset (`ptools train --device cuda`: the paper's widths, 128 px,
#      mask and pair terms, EMA) on the built-in set, then benchmarks/train_quality.py --judge on its
#      checkpoint: the same independent judge and measures as the CPU quick start (QUALITY_S=0 skips it).
# Without CUDA it says so and exits 2 before doing anything. Knobs: TRAIN_S (seconds per timed run, 120),
# PRESET (paper|small, paper), QUALITY_S, PYTHON (python). Everything is written to a temp folder, removed at
# the end.
set -uo pipefail

PYTHON=${PYTHON:-python}
TRAIN_S=${TRAIN_S:-120}
QUALITY_S=${QUALITY_S:-600}
PRESET=${PRESET:-paper}
BATCH=16
SIZE=128

gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null)
if [[ -z "$gpus" ]]; then
    echo "gpu_check: cannot import torch with $PYTHON" >&2
    exit 2
fi
if [[ "$gpus" == 0 ]]; then
    echo "gpu_check: no CUDA device visible (torch.cuda.is_available() is False): nothing to check here;" \
        "run this on a GPU machine" >&2
    exit 2
fi
"$PYTHON" -c 'import torch; print(f"gpu_check: {torch.cuda.device_count()} x {torch.cuda.get_device_name()}, torch {torch.__version__}")'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
ok() { echo "  ok: $*"; }
bad() { echo "  FAILED: $*"; failures=$((failures + 1)); }
field() { "$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2" 2>/dev/null; }

"$PYTHON" -m ptools dataset synth "$work/data" --n 256 --size $SIZE --json >/dev/null || { echo "gpu_check: synth failed" >&2; exit 1; }
common=(--data "$work/data" --preset "$PRESET" --image-size $SIZE --batch-size $BATCH --device cuda
        --sample-every 0 --ckpt-every 0 --workers 4 --json)

timed_run() {  # name amp: train TRAIN_S seconds from the first logged step, then SIGTERM (as a scheduler does);
    local name=$1 amp=$2    # expects exit 130 and checkpoints/interrupted.pt
    echo "[$name] ${TRAIN_S}s of training, --amp $amp, channels_last (config default on CUDA)"
    "$PYTHON" -m ptools train "${common[@]}" --amp "$amp" --steps 100000000 --out "$work/$name" \
        >"$work/$name.json" 2>"$work/$name.err" &
    local pid=$! waited=0
    while kill -0 "$pid" 2>/dev/null && (( waited < 600 )); do  # startup: imports, data check, models
        [[ -f "$work/$name/metrics.csv" ]] && (( $(wc -l <"$work/$name/metrics.csv") >= 2 )) && break
        sleep 1
        waited=$((waited + 1))
    done
    sleep "$TRAIN_S"
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    local rc=$?
    if [[ $rc == 130 && -f "$work/$name/checkpoints/interrupted.pt" ]]; then
        ok "stopped at step $(field "$work/$name.json" step), $(field "$work/$name.json" steps_per_s) step/s," \
            "losses $(field "$work/$name.json" losses)"
    else
        bad "$name: exit $rc (expected 130 and interrupted.pt); last lines:"; tail -5 "$work/$name.err"
    fi
}

timed_run bf16 bf16
step=$(field "$work/bf16.json" step)
if [[ -n "$step" ]]; then
    echo "[resume] the bf16 run for 20 more steps"
    if "$PYTHON" -m ptools train --resume "$work/bf16" --steps $((step + 20)) --json \
        >"$work/resume.json" 2>"$work/resume.err"; then
        start=$(field "$work/resume.json" start_step)
        [[ "$start" == "$step" ]] && ok "resumed at $start, ended at $(field "$work/resume.json" step)" \
            || bad "resume started at $start, expected $step"
    else
        bad "resume exited $?"; tail -5 "$work/resume.err"
    fi
fi

timed_run fp16 fp16

if (( gpus >= 2 )); then
    echo "[ddp] torchrun, 2 processes, NCCL, 20 steps"
    if "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2 -m ptools train "${common[@]}" \
        --amp bf16 --steps 20 --out "$work/ddp" >"$work/ddp.json" 2>"$work/ddp.err"; then
        ok "world size $(field "$work/ddp.json" world_size), $(field "$work/ddp.json" steps_per_s) step/s per process"
    else
        bad "ddp exited $?"; tail -8 "$work/ddp.err"
    fi
else
    echo "[ddp] skipped: $gpus GPU visible (needs 2)"
fi

echo "[speed] benchmarks/train_speed.py --gpu-only (paper widths unless PRESET=small)"
speed_args=(--gpu-only)
[[ "$PRESET" == paper ]] && speed_args+=(--paper-widths)
"$PYTHON" benchmarks/train_speed.py "${speed_args[@]}" || bad "train_speed exited $?"

if (( QUALITY_S > 0 )); then
    echo "[quality] ${QUALITY_S}s of the default preset at 128 px on the built-in set, judged independently"
    "$PYTHON" -m ptools train --device cuda --out "$work/quality" --steps 100000000 --sample-every 0 \
        --ckpt-every 0 --json >"$work/quality.json" 2>"$work/quality.err" &
    qpid=$! waited=0
    while kill -0 "$qpid" 2>/dev/null && (( waited < 600 )); do
        [[ -f "$work/quality/metrics.csv" ]] && (( $(wc -l <"$work/quality/metrics.csv") >= 2 )) && break
        sleep 1
        waited=$((waited + 1))
    done
    sleep "$QUALITY_S"
    kill -TERM "$qpid" 2>/dev/null
    wait "$qpid"
    qrc=$?
    if [[ $qrc == 130 && -f "$work/quality/checkpoints/interrupted.pt" ]]; then
        ok "default preset: step $(field "$work/quality.json" step), $(field "$work/quality.json" steps_per_s) step/s"
        "$PYTHON" benchmarks/train_quality.py --judge "$work/quality/checkpoints/interrupted.pt" \
            || bad "train_quality exited $?"
    else
        bad "quality run: exit $qrc (expected 130 and interrupted.pt); last lines:"; tail -5 "$work/quality.err"
    fi
fi

echo "gpu_check: $failures failure(s)"
(( failures == 0 ))
