#!/usr/bin/env bash
# The GNN's GPU checks, for a machine with CUDA and PyTorch (+ torch_geometric, numba) already installed:
#   OUT=/some/dir bash benchmarks/gpu_check.sh
# 1. the GNN tests, CUDA cases included; 2. lastfm-asia: GPU training with the defaults (quality);
# 3. lastfm-asia: CPU vs GPU, same epochs (speed); 4. the 1M-user step benchmark on CPU and GPU.
set -u
OUT=${OUT:-/tmp/pymk-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PY:-python3}
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  $PY -c "import torch, torch_geometric, numba, numpy; print('torch', torch.__version__, 'pyg', torch_geometric.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__)"
  echo "== 1. tests/gnn"
  timeout 240 $PY -m pytest -q -p no:cacheprovider tests/gnn 2>&1 | tail -15
  echo "== 2. lastfm-asia, GPU, default epochs"
  timeout 200 $PY -m benchmarks.bench_gnn_device --edges tests/data/lastfm-asia.csv.gz --devices cuda \
    --json "$OUT/lastfm_cuda.json"
  echo "== 3. lastfm-asia, CPU vs GPU, 4 epochs each"
  timeout 200 $PY -m benchmarks.bench_gnn_device --edges tests/data/lastfm-asia.csv.gz --devices cpu,cuda \
    --epochs 4 --json "$OUT/lastfm_side_by_side.json"
  echo "== 4. synth 1M x 50, 60 steps"
  timeout 240 $PY -m benchmarks.bench_gnn --cache /tmp/pymk-bench --devices cpu,cuda
} 2>&1 | tee "$OUT/gpu_check.log"
