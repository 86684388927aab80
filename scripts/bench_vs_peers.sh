#!/usr/bin/env bash
# Runs ONNX Runtime and dynbench on the same cases back to back and prints the ratio table.
# Usage: scripts/bench_vs_peers.sh [OUT_DIR]   (needs ../shared/peers/setup.sh .venv-peers once)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
mkdir -p "$out"
py=.venv-peers/bin/python
peers=../shared/peers
convs="conv3x3_c3_k64_32x32 conv3x3_c64_k64_32x32 conv3x3_c128_k128_16x16 conv3x3_c256_k256_8x8 conv3x3_c512_k512_4x4"
models="resnet18_cifar resnet56_cifar"
swift build -c release -Xswiftc -target-cpu -Xswiftc native
bin=.build/release/dynbench
"$py" "$peers/ort_bench.py" --threads 1 --batch 1 64 --models $convs --json "$out/ort-kernels.json"
"$bin" kernels --cases $convs --threads 1 --batch 1 64 --json "$out/ours-kernels.json"
"$py" "$peers/ort_bench.py" --threads 1 2 --batch 1 64 --models $models --json "$out/ort-models.json"
"$bin" models --cases $models --threads 1 2 --batch 1 64 --json "$out/ours-models.json"
"$bin" peak
echo; echo "## 3×3 convolutions (1 thread)"; "$bin" compare "$out/ort-kernels.json" "$out/ours-kernels.json"
echo; echo "## CIFAR ResNets"; "$bin" compare "$out/ort-models.json" "$out/ours-models.json"
