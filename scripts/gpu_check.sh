#!/usr/bin/env bash
# GPU check of layer 3 (issue 9), one call on the lent GPU machine, under 8 minutes:
#   run(command="bash scripts/gpu_check.sh", timeout_s=540)
# Writes gpu_report.md / gpu_report.json / gpu_check.log to $OUT (or ./gpu_check_out).
# Back here: python scripts/gpu_check.py --import-report <files_at>/gpu_report.md
# Dry run anywhere (tiny model, CPU ok): bash scripts/gpu_check.sh --tiny
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu_check_out}"
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" >/dev/null; then  # wheels carried for packages missing there
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/nvidia-smi.txt"
timeout 450 python3 scripts/gpu_check.py --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
