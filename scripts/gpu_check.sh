#!/usr/bin/env bash
# The GPU check, run on the GPU machine from the repository root, with its image's python3
# (Python 3.12, CUDA torch, numpy 2, pandas, pyarrow, scipy, pytest, ...; no network) and the
# wheels scripts/gpu_bundle.py builds on a networked machine. At most 64 MiB travel per command,
# the checkout included, so the bundle comes in parts, one carried per command (with
# gpu_bundle/manifest.json), and is staged in /tmp, which the machine keeps between
# back-to-back commands. Every command stages the parts it carries, then refuses to go on,
# naming the parts to carry, until every wheel of the manifest is staged:
#
#   scripts/gpu_check.sh stage          # carry gpu_bundle/part_1 + gpu_bundle/manifest.json
#   scripts/gpu_check.sh run bench      # carry gpu_bundle/part_2 + manifest: install, then
#                                       # bench/gpu.py in four calls (<= 6 min)
#   scripts/gpu_check.sh run search     # a short asha_hyperopt search at four trials per GPU
#                                       # (8 trials, 3 epochs, small data), `final` on its
#                                       # best trial, the report (<= 5.6 min)
#   scripts/gpu_check.sh run tests      # the CUDA-only tests (<= 1 min)
#   scripts/gpu_check.sh run search+tests   # both (<= 6.6 min)
#
# CPU=1 rehearses the same steps on a machine without a GPU (bench --quick, CPU trials), with
# PYTHON naming a Python 3.12 that holds torch, numpy 2 and the image's packages. Results go to
# $OUT (the device tool brings that folder back): JSON and Markdown as they are, everything
# else in logs.tar.gz.
set -uo pipefail
PY=${PYTHON:-python3}
CPU=${CPU:-0}
BUNDLE=${BUNDLE:-gpu_bundle}
WHEELS=${WHEELS:-/tmp/eqcvt-wheels}
SITE=${SITE:-/tmp/eqcvt-site}
OUT=${OUT:-$PWD/gpu_check_out}
WORK=${WORK:-/tmp/eqcvt-gpu-check}

case "${1:-}" in
  stage) WHAT=none ;;
  run) WHAT=${2:-bench} ;;
  *) echo "usage: $0 stage | run [bench|search|tests|search+tests]" >&2; exit 2 ;;
esac
has() { [[ "+$WHAT+" == *"+$1+"* ]]; }

mkdir -p "$WHEELS" "$OUT"
# At most 8 files come back from $OUT: the JSON and Markdown stay, the rest (logs, the report's
# plots) go into one logs.tar.gz when the command ends, however it ends.
pack_out() {
  local rest
  rest=$(cd "$OUT" && ls -A | grep -v -E '\.(json|md)$|^logs\.tar\.gz$')
  [ -z "$rest" ] || (cd "$OUT" && tar czf logs.tar.gz $rest && rm -rf $rest)
}
trap pack_out EXIT
for part in "$BUNDLE"/part_*; do
  [ -d "$part" ] && cp "$part"/*.whl "$WHEELS"/ && echo "staged $part"
done
[ -f "$BUNDLE/manifest.json" ] && cp "$BUNDLE/manifest.json" "$WHEELS"/
"$PY" - "$WHEELS" <<'PYEOF'
import json, pathlib, sys
wheels = pathlib.Path(sys.argv[1])
try:
    parts = json.loads((wheels / "manifest.json").read_text())["parts"]
except OSError:
    sys.exit("no manifest staged: carry gpu_bundle/manifest.json")
missing = [f"part_{i}" for i, names in enumerate(parts, 1)
           if any(not (wheels / n).exists() for n in names)]
have = sum(map(len, parts)) - sum(not (wheels / n).exists() for p in parts for n in p)
print(f"{have} of {sum(map(len, parts))} wheels staged" +
      (f"; still to carry: {', '.join(missing)}" if missing else ""))
sys.exit(2 if missing else 0)
PYEOF
staged=$?  # 0: all staged, 2: parts still to carry, else no manifest
if [ "$WHAT" = none ]; then [ $staged -eq 0 ] || [ $staged -eq 2 ]; exit $?; fi
[ $staged -eq 0 ] || exit 1

# --target, not a venv: the image's python3 is itself a venv, whose packages (torch) a nested
# venv would not see. The checkout comes first on the path, then the bundle, then the image.
if [ "$(cat "$SITE/.manifest" 2>/dev/null)" != "$(cat "$WHEELS/manifest.json")" ]; then
  rm -rf "$SITE"
  "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "$WHEELS"/*.whl > "$OUT/pip.log" 2>&1 \
    || { echo "pip install failed"; tail -30 "$OUT/pip.log"; exit 1; }
  cp "$WHEELS/manifest.json" "$SITE/.manifest"
fi
export PYTHONPATH=$PWD:$SITE
# escnn's docstrings warn under Python 3.12 when compiled on first import (--no-compile)
export RAY_DEDUP_LOGS=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore::SyntaxWarning

"$PY" - > "$OUT/env.json" <<'PYEOF' || { echo "imports failed"; cat "$OUT/env.json"; exit 1; }
import json
import escnn, hyperopt, mlflow, numpy, pandas, pyarrow, ray, torch
import eqcvt  # noqa: F401  (patches escnn's SVD call for the image's scikit-learn)
from escnn import gspaces, nn as enn
for g in (gspaces.rot2dOnR2(8), gspaces.flipRot2dOnR2(4)):  # SVD bases; lie_learn on import
    enn.R2Conv(enn.FieldType(g, [g.trivial_repr]), enn.FieldType(g, [g.regular_repr]), 3)
cuda = torch.cuda.is_available()
print(json.dumps({"numpy": numpy.__version__, "torch": torch.__version__,
                  "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
                  "bf16": cuda and torch.cuda.is_bf16_supported(), "escnn": escnn.__version__,
                  "ray": ray.__version__, "mlflow": mlflow.__version__,
                  "pandas": pandas.__version__, "pyarrow": pyarrow.__version__}))
PYEOF
cat "$OUT/env.json"; echo

# the search's time includes its preflight, which builds ~60 sampled models on one CPU core
# before Ray starts (about 15 s alone on a 2-core CPU machine)
if [ "$CPU" = 1 ]; then  # a rehearsal: no device time to save, so wider limits
  QUICK=(--quick); TRIALS=(--num-samples 4 --epochs 1 --gpus-per-trial 0 --cpus-per-trial 1)
  DATA=(--set data.n_train=256 --set data.n_val=64 --set data.n_test=64)
  FINAL_EPOCHS=1; T_SEARCH=600; T_FINAL=300
else
  QUICK=(); TRIALS=(--num-samples 8 --epochs 3 --gpus-per-trial 0.25 --cpus-per-trial 3)
  DATA=(--set data.n_train=4096 --set data.n_val=512 --set data.n_test=512)
  FINAL_EPOCHS=3; T_SEARCH=240; T_FINAL=75
fi

if has bench; then
  echo "== bench/gpu.py (one call per section, so a slow one cannot take the others with it)"
  timeout 150 "$PY" bench/gpu.py "${QUICK[@]}" --sections models --iters 5 \
    --compile-models cvt_baseline seed_eqcvt > "$OUT/gpu_models.json" 2> "$OUT/gpu_models.log"
  echo "models rc=$?"
  timeout 80 "$PY" bench/gpu.py "${QUICK[@]}" --sections packed --seconds 10 \
    > "$OUT/gpu_packed.json" 2> "$OUT/gpu_packed.log"
  echo "packed rc=$?"
  timeout 45 "$PY" bench/gpu.py "${QUICK[@]}" --sections simulation --iters 3 \
    > "$OUT/gpu_simulation.json" 2> "$OUT/gpu_simulation.log"
  echo "simulation rc=$?"
  timeout 60 "$PY" bench/gpu.py "${QUICK[@]}" --sections feed layout --iters 5 \
    > "$OUT/gpu_feed.json" 2> "$OUT/gpu_feed.log"
  echo "feed/layout rc=$?"
  "$PY" bench/gpu_targets.py "$OUT"/gpu_*.json --markdown "$OUT/gpu.md" > "$OUT/targets.json"
  cat "$OUT/gpu.md"
fi

if has search; then
  echo "== asha_hyperopt search, 4 trials per GPU"
  rm -rf "$WORK" && mkdir -p "$WORK"
  URI="sqlite:///$WORK/mlflow.db"
  timeout $T_SEARCH "$PY" -m pipeline.cli run --tracking-uri "$URI" --space asha_hyperopt \
    --experiment gpu-check --storage-path "$WORK/results" "${TRIALS[@]}" "${DATA[@]}" \
    > "$OUT/search.log" 2>&1
  echo "search rc=$?"; tail -25 "$OUT/search.log"
  echo "== final on the best trial"
  timeout $T_FINAL "$PY" -m pipeline.cli final --tracking-uri "$URI" --experiment gpu-check \
    --top-k 1 --epochs $FINAL_EPOCHS --seeds 1 \
    > "$OUT/final.log" 2>&1
  echo "final rc=$?"; tail -15 "$OUT/final.log"
  timeout 20 "$PY" -m pipeline.cli report --tracking-uri "$URI" --experiment gpu-check \
    --out "$OUT/report.md" > "$OUT/report.log" 2>&1
  echo "report rc=$?"
fi

if has tests; then
  echo "== CUDA-only tests"
  timeout 60 "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda \
    tests/pipeline/test_feed.py tests/pipeline/data/test_simulate.py \
    tests/pipeline/test_engine.py > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"; tail -8 "$OUT/tests.log"
fi
