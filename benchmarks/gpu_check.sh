#!/usr/bin/env bash
# The device checks of a GPU session, in one run (a GPU is lent to some sessions only;
# this is the prepared script to give it):
#   1. the GPU tests: graph-replayed against eager runs, the row-sparse Triton kernel
#      against the dense update, the device-resident streams, CIFAR's channels-last run;
#   2. benchmarks/permuted_mnist_speed.py --gpu-only: eager / CUDA graphs / graphs with
#      the row-sparse kernel at N = 1, 5, 30 seeds, and the paper tier's projection;
#   3. the image streams' paper-tier throughput (imagenet_speed.py, cifar_speed.py).
# Logs go to $OUT (default ./gpu_out). Where the machine lacks the project's pure-Python
# dependencies, put their wheels (and this project's, for its entry points) in .whl/:
# they are installed to /tmp/site first.
#
#   bash benchmarks/gpu_check.sh
#   TESTS_S=300 MNIST_S=300 bash benchmarks/gpu_check.sh     # longer limits per step
set -u
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log to $out/NAME.log
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  echo "   rc=$rc in $((SECONDS - start)) s"
  tail -n 45 "$out/$name.log"
}

step tests "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider -rs \
  tests/baselines/test_rowsparse.py tests/baselines/test_vectorized_device.py \
  tests/test_device_streams.py \
  "tests/test_incremental_agents.py::test_cuda_runs_channels_last_the_same_network"
step mnist_speed "${MNIST_S:-200}" python3 benchmarks/permuted_mnist_speed.py --gpu-only
step imagenet_speed "${IMAGENET_S:-60}" python3 benchmarks/imagenet_speed.py --tier paper \
  --device cuda --steps 300 --repeats 2
step cifar_speed "${CIFAR_S:-60}" python3 benchmarks/cifar_speed.py --tier paper --device cuda \
  --steps 60 --repeats 2
