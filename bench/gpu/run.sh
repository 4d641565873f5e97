#!/usr/bin/env bash
# GPU figures for the three reference models. On the device machine, from the
# repository root:   bash bench/gpu/run.sh   (extra args go to gpu_bench.py)
# Results: $OUT/gpu-figures.json (written incrementally) and $OUT/gpu-figures.md.
set -u
cd "$(dirname "$0")/../.." || exit 1
D=bench/gpu
PY=""
for c in python3 python; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import torch' >/dev/null 2>&1; then PY=$c; break; fi
done
if [ -z "$PY" ]; then
  echo "run.sh: neither python3 nor python can import torch" >&2
  python3 -c 'import torch' ; python -c 'import torch'
  exit 1
fi
"$PY" -c 'import torch,sys; print(sys.version, torch.__version__, torch.cuda.is_available())'
"$PY" -c 'import numpy; print("numpy", numpy.__version__)' || echo "run.sh: numpy missing for $PY" >&2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
if [ -f "$D/MANIFEST.sha256" ]; then
  (cd "$D" && sha256sum -c --quiet MANIFEST.sha256) || echo "run.sh: WARNING checksum mismatch (files damaged in transit?)" >&2
fi
export OUT="${OUT:-$PWD/$D/out}"
mkdir -p "$OUT"
# gpu_bench budgets itself to ~5.5 min; the timeout is only a safety net (JSON is incremental)
timeout -k 10 400 "$PY" -u "$D/gpu_bench.py" --out "$OUT" "$@"
rc=$?
echo "gpu_bench exit code $rc"
ls -la "$OUT"
exit $rc
