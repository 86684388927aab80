#!/usr/bin/env bash
# torchvision's ResNet-18 and ResNet-50 at 224×224 on ONNX Runtime and on dynbench, alternating
# for ROUNDS rounds (batch 1 and 8, 1 and 2 threads), then the ratio table of each round.
# Usage: scripts/bench_imagenet_vs_ort.sh [OUT_DIR] [ROUNDS]   (needs ../shared/peers/setup.sh .venv-peers once)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results/imagenet}
rounds=${2:-3}
mkdir -p "$out"
py=.venv-peers/bin/python
models="resnet18_imagenet resnet50_imagenet"
swift build -c release -Xswiftc -target-cpu -Xswiftc native
bin=.build/release/dynbench
for r in $(seq 1 "$rounds"); do
    "$py" ../shared/peers/ort_bench.py --threads 1 2 --batch 1 8 --models $models --json "$out/ort-$r.json" > /dev/null
    "$bin" models --cases $models --threads 1 2 --batch 1 8 --json "$out/ours-$r.json" > /dev/null
    echo "## round $r"; "$bin" compare "$out/ort-$r.json" "$out/ours-$r.json"
done
