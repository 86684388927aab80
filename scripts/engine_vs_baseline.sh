#!/usr/bin/env bash
# Side-by-side speed of two dynbench binaries in alternating rounds (issue 16, part 3): the
# baseline (the last commit before the engine, 5affd0f) against the current build.
#   scripts/engine_vs_baseline.sh OLD_DYNBENCH NEW_DYNBENCH OUTDIR [ROUNDS]
# Each round runs both binaries (which goes first alternates) on: training steps of ResNet-20
# and ResNet-56 (batch 128, 2 threads) and inference of ResNet-18 and ResNet-56 (batch 1 and 64,
# 1 and 2 threads). scripts/engine_vs_baseline.py OUTDIR prints the median per-round ratios.
# Build the baseline with:
#   git worktree add /tmp/base 5affd0f && (cd /tmp/base && swift build -c release -Xswiftc -target-cpu -Xswiftc native)
set -euo pipefail
old=$1 new=$2 out=$3 rounds=${4:-10}
mkdir -p "$out"
run() {  # binary label round
    "$1" train-bench --models resnet20_cifar resnet56_cifar --threads 2 --batch 128 --repeats 6 --warmup 2 \
        --json "$out/train-$2-$3.json" > /dev/null
    "$1" models --cases resnet18_cifar resnet56_cifar --threads 1 2 --batch 1 64 --repeats 10 \
        --json "$out/infer-$2-$3.json" > /dev/null
}
for r in $(seq 1 "$rounds"); do
    if (( r % 2 )); then run "$old" old "$r"; run "$new" new "$r"; else run "$new" new "$r"; run "$old" old "$r"; fi
    echo "round $r done"
done
