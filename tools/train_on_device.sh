#!/usr/bin/env bash
# Train the toy models on one GPU for a fixed time and bring them back small. Three runs share the GPU,
# each until its time_limit_s (LIMIT_S):
#   t2mv       the text model continued (configs/toy_t2mv_device.yaml)
#   t2mv_wide  a wider text model from scratch (configs/toy_t2mv_device_wide.yaml)
#   i2mv       the image model continued (configs/toy_i2mv_device.yaml)
# Each is exported as an fp16 model folder and packed as $OUT/<name>.tar.NN (15 MiB parts), with
# $OUT/logs.tar.gz (training logs, metrics, resolved configs) and $OUT/summary.txt: at most 8 files,
# what the device tool brings back. In one device call, from the repository root:
#
#   run  command: bash tools/train_on_device.sh      carry: [".whl"]      timeout_s: 600
#   here: mkdir -p runs/device_export && cat <files_at>/t2mv.tar.* | tar -x -C runs/device_export
#
# .whl holds what the device image lacks (docs/training.md lists the download). The continued
# models start from $RUNS/embedded/t2mv and $RUNS/embedded/i2mv (what tools/rebuild_embedded.sh
# writes); where they are absent, as on a fresh device machine, they are copied from data/embedded,
# which holds exactly those folders. Arguments are overrides for every run (the CPU dry run in
# tests/tools/test_train_on_device.py shrinks the world and the models' steps with them).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/device_out}"
RUNS="${RUNS:-runs}"
LIMIT_S="${LIMIT_S:-360}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
mkdir -p "$OUT" "$RUNS" "$RUNS/device_logs"
declare -A BASE=([t2mv]="$RUNS/embedded/t2mv" [t2mv_wide]="$RUNS/embedded/t2mv" [i2mv]="$RUNS/embedded/i2mv")
for task in t2mv i2mv; do
    [ -d "${BASE[$task]}" ] || { mkdir -p "$RUNS/embedded"; cp -rL "data/embedded/$task" "${BASE[$task]}"; }
done
SUMMARY="$OUT/summary.txt"
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"; } > "$SUMMARY"

declare -A CONFIG=([t2mv]=configs/toy_t2mv_device.yaml [t2mv_wide]=configs/toy_t2mv_device_wide.yaml
                   [i2mv]=configs/toy_i2mv_device.yaml)
NAMES=(t2mv t2mv_wide i2mv)
overrides() { echo "base=${BASE[$1]}" "output_dir=$RUNS/device_$1" "time_limit_s=$LIMIT_S"; }

# the toy world and its extra training objects, once, before the runs start side by side
start=$SECONDS
"$PY" - "${CONFIG[t2mv]}" $(overrides t2mv) "$@" <<'EOF'
import sys
from videomv.toy import build_configured_world
from videomv.train.config import load_config
from videomv.train.schema import MultiViewConfig
build_configured_world(load_config(sys.argv[1], sys.argv[2:], MultiViewConfig))
EOF
echo "toy world ready: $((SECONDS - start)) s" >> "$SUMMARY"

declare -A PID
for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2046
    "$PY" scripts/train_mv.py --config "${CONFIG[$name]}" $(overrides "$name") overwrite=true "$@" \
        > "$RUNS/device_logs/$name.log" 2>&1 &
    PID[$name]=$!
done
for name in "${NAMES[@]}"; do
    status=0
    wait "${PID[$name]}" || status=$?
    steps=$(tail -n 1 "$RUNS/device_$name/metrics.jsonl" 2>/dev/null | sed -n 's/.*"step": \([0-9]*\).*/\1/p')
    echo "$name: exit $status after $((SECONDS - start)) s, ${steps:-0} steps" >> "$SUMMARY"
    [ "$status" = 0 ] || continue
    case $name in
        i2mv) export_args=(--task image --timestep-spacing trailing --clean-input-view) ;;
        *) export_args=(--task text --guidance 2) ;;
    esac
    export_args+=(--vae "${BASE[$name]}/vae" --reconstructor "${BASE[$name]}/reconstructor"
                  --sampler dpmsolver++ --steps 20)
    rm -rf "$RUNS/device_export/$name"
    if "$PY" tools/export_embedded.py "${export_args[@]}" --pipeline "$RUNS/device_$name/final" \
            --out "$RUNS/device_export/$name" --resolution 64 >> "$RUNS/device_logs/$name.log" 2>&1; then
        tar -cf - -C "$RUNS/device_export" "$name" | split -d -b 15M - "$OUT/$name.tar."
        echo "$name: packed $(du -sh "$RUNS/device_export/$name" | cut -f1)" >> "$SUMMARY"
    else
        echo "$name: export failed (see its log)" >> "$SUMMARY"
    fi
done
for name in "${NAMES[@]}"; do
    cp "$RUNS/device_$name/metrics.jsonl" "$RUNS/device_logs/$name.metrics.jsonl" 2>/dev/null || true
    cp "$RUNS/device_$name/config.yaml" "$RUNS/device_logs/$name.config.yaml" 2>/dev/null || true
done
tar -czf "$OUT/logs.tar.gz" -C "$RUNS" device_logs
cat "$SUMMARY"
