#!/usr/bin/env bash
# The GPU check, run on the GPU machine (Python 3.12, CUDA torch, numpy 2, no network) from the
# repository root, with the wheels built by scripts/gpu_bundle.py on a networked machine.
# At most 64 MiB travel per command, so the bundle parts are staged first, one command each
# (the machine keeps /tmp between back-to-back commands):
#
#   scripts/gpu_check.sh stage gpu_bundle/part_1     # carry gpu_bundle/part_1; repeat per part
#   scripts/gpu_check.sh run bench     # install, bench/gpu.py in three sections (<= 5 min)
#   scripts/gpu_check.sh run search    # a short asha_hyperopt search at four trials per GPU
#                                      # (8 trials, 3 epochs, small data) + `final` on its
#                                      # best trial (<= 5 min)
#   scripts/gpu_check.sh run tests     # the CUDA-only tests (pinned feed, simulator on CUDA)
#   scripts/gpu_check.sh run all       # all three (~9-11 min: over one command's 10-minute
#                                      # limit only if every step runs to its timeout)
# Results go to $OUT (the device tool brings that folder back).
set -uo pipefail
WHEELS=${WHEELS:-/tmp/eqcvt-wheels}
VENV=${VENV:-/tmp/eqcvt-venv}
OUT=${OUT:-$PWD/gpu_check_out}
WORK=${WORK:-/tmp/eqcvt-gpu-check}

case "${1:-}" in
  stage)
    mkdir -p "$WHEELS" && cp "${2:?stage needs a bundle part folder}"/*.whl "$WHEELS"/
    echo "staged: $(ls "$WHEELS" | wc -l) wheels in $WHEELS"; exit 0 ;;
  run) WHAT=${2:-all} ;;
  *) echo "usage: $0 stage DIR | run [bench|search|tests|all]" >&2; exit 2 ;;
esac

mkdir -p "$OUT"
if [ ! -x "$VENV/bin/python" ]; then
  # system site packages: the machine's CUDA torch stays in use
  python3 -m venv --system-site-packages "$VENV"
  # --no-deps: the bundle is the closure already; numpy 1.26 (if carried) shadows numpy 2
  "$VENV/bin/python" -m pip install --no-index --no-deps "$WHEELS"/*.whl > "$OUT/pip.log" 2>&1 \
    || { echo "pip install failed"; tail -30 "$OUT/pip.log"; exit 1; }
fi
PY="$VENV/bin/python"
export PYTHONPATH=$PWD  # the checkout under test
export RAY_DEDUP_LOGS=1

"$PY" - > "$OUT/env.json" <<'PYEOF' || { echo "imports failed"; cat "$OUT/env.json"; exit 1; }
import json
import escnn, hyperopt, mlflow, numpy, ray, torch
from escnn import gspaces, nn as enn
g = gspaces.rot2dOnR2(8)  # exercises lie_learn / py3nj paths escnn uses for 2D groups
enn.R2Conv(enn.FieldType(g, [g.trivial_repr]), enn.FieldType(g, [g.regular_repr]), 3)
print(json.dumps({"numpy": numpy.__version__, "torch": torch.__version__,
                  "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
                  "bf16": torch.cuda.is_bf16_supported(), "escnn": escnn.__version__,
                  "ray": ray.__version__, "mlflow": mlflow.__version__}))
PYEOF
cat "$OUT/env.json"

if [ "$WHAT" = bench ] || [ "$WHAT" = all ]; then
echo "== bench/gpu.py (one call per section, so a slow one cannot take the others with it)"
timeout 150 "$PY" bench/gpu.py --sections models --iters 5 \
  --compile-models cvt_baseline seed_eqcvt > "$OUT/gpu_models.json" 2> "$OUT/gpu_models.log"
echo "models rc=$?"
timeout 100 "$PY" bench/gpu.py --sections packed --seconds 10 \
  > "$OUT/gpu_packed.json" 2> "$OUT/gpu_packed.log"
echo "packed rc=$?"
timeout 60 "$PY" bench/gpu.py --sections simulation --iters 3 \
  > "$OUT/gpu_simulation.json" 2> "$OUT/gpu_simulation.log"
echo "simulation rc=$?"
timeout 90 "$PY" bench/gpu.py --sections feed layout --iters 5 \
  > "$OUT/gpu_feed.json" 2> "$OUT/gpu_feed.log"
echo "feed/layout rc=$?"
fi

if [ "$WHAT" = tests ] || [ "$WHAT" = all ]; then
echo "== CUDA-only tests"
timeout 240 "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda \
  tests/pipeline/test_feed.py tests/pipeline/data/test_simulate.py > "$OUT/tests.log" 2>&1
echo "tests rc=$?"; tail -8 "$OUT/tests.log"
fi

if [ "$WHAT" = search ] || [ "$WHAT" = all ]; then
echo "== asha_hyperopt search, 4 trials per GPU"
rm -rf "$WORK" && mkdir -p "$WORK"
URI="sqlite:///$WORK/mlflow.db"
timeout 200 "$PY" -m pipeline.cli run --tracking-uri "$URI" --space asha_hyperopt \
  --experiment gpu-check --storage-path "$WORK/results" --num-samples 8 --epochs 3 \
  --gpus-per-trial 0.25 --cpus-per-trial 3 \
  --set data.n_train=4096 --set data.n_val=512 --set data.n_test=512 \
  > "$OUT/search.log" 2>&1
echo "search rc=$?"; tail -25 "$OUT/search.log"

echo "== final on the best trial"
timeout 100 "$PY" -m pipeline.cli final --tracking-uri "$URI" --experiment gpu-check \
  --top-k 1 --epochs 3 --seeds 1 > "$OUT/final.log" 2>&1
echo "final rc=$?"; tail -15 "$OUT/final.log"
timeout 30 "$PY" -m pipeline.cli report --tracking-uri "$URI" --experiment gpu-check \
  --out "$OUT/report.md" > /dev/null 2>&1 || true
fi
"$PY" - "$OUT" <<'PYEOF' || true
import json, pathlib, sys
d = {}
for part in ("models", "packed", "simulation", "feed"):
    try:
        d.update(json.loads((pathlib.Path(sys.argv[1]) / f"gpu_{part}.json").read_text()))
    except (OSError, ValueError):
        print("no figures from", part)
for m in d.get("models", []):
    for c in m["cases"]:
        print(m["model"], c["precision"], "compile" if c["compile"] else "", round(c["train_images_per_s"]),
              round(c["eval_images_per_s"]), c["train_mfu"] and round(c["train_mfu"], 4))
for r in d.get("packed", {}).get("runs", []):
    print("packed", r["trials"], round(r["aggregate_images_per_s"]), round(r["aggregate_vs_alone"], 2))
for r in d.get("feed", {}).get("runs", []):
    print("feed", r["feed"], round(r["train_images_per_s"]), round(r["vs_pageable"], 2))
for r in d.get("layout", {}).get("runs", []):
    print("layout", r["model"], r["channels_last"], r["cudnn_benchmark"], round(r["vs_default"], 2))
for r in d.get("simulation", {}).get("runs", []):
    print("sim", r["preset"], r["class"], r["batch"], round(r["images_per_s"]), round(r["share_of_train_step"], 3))
PYEOF
