#!/usr/bin/env bash
# Training throughput side by side: PyTorch CPU (plain and channels-last) and dynbench train-bench,
# interleaved over ROUNDS rounds so that both see the same machine noise; the best-median round
# of each is kept, then the ratio tables are printed.
# Usage: scripts/train_bench_vs_torch.sh [OUT_DIR] [ROUNDS]   (needs ../shared/peers/setup.sh .venv-peers once)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
rounds=${2:-3}
mkdir -p "$out"
py=.venv-peers/bin/python
peers=../shared/peers
models="resnet20_cifar resnet56_cifar"
args="--threads 2 --batch 128"
swift build -c release -Xswiftc -target-cpu -Xswiftc native
bin=.build/release/dynbench
for r in $(seq 1 "$rounds"); do
    "$py" "$peers/torch_train_bench.py" --models $models $args --json "$out/torch-train-$r.json"
    "$py" "$peers/torch_train_bench.py" --models $models $args --channels-last --json "$out/torch-cl-train-$r.json"
    "$bin" train-bench --models $models $args --json "$out/ours-train-$r.json"
done
# Per framework and model, the round with the best (lowest) median.
"$py" - "$out" "$rounds" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
for name in ["torch-train", "torch-cl-train", "ours-train"]:
    files = [json.load(open(f"{out}/{name}-{r}.json")) for r in range(1, rounds + 1)]
    best = {}
    for f in files:
        for row in f["results"]:
            key = (row["model"], row["threads"], row["batch"])
            if key not in best or row["median_ms"] < best[key]["median_ms"]:
                best[key] = row
    json.dump({"info": files[0]["info"], "results": list(best.values())}, open(f"{out}/{name}.json", "w"), indent=1)
PY
echo; echo "## vs PyTorch (NCHW)"; "$bin" compare "$out/torch-train.json" "$out/ours-train.json"
echo; echo "## vs PyTorch (channels-last)"; "$bin" compare "$out/torch-cl-train.json" "$out/ours-train.json"
