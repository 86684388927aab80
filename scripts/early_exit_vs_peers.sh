#!/usr/bin/env bash
# RANet and MSDNet against what a user would run instead, alternating over ROUNDS rounds so that
# both sides see the same machine: ONNX Runtime inference on the authors' models (every exit
# computed) against `dynbench exits` (last exit: every exit computed), and PyTorch training steps
# (NCHW and channels-last) against `dynbench train-bench`; batch 64 for training, 1 and 64 for
# inference, 1 and 2 threads. Prints medians over the rounds and their ratios.
# Usage: scripts/early_exit_vs_peers.sh MSDNET_CHECKOUT RANET_CHECKOUT [OUT_DIR] [ROUNDS] [infer|train|both]
#   (the authors' repositories, fetched; needs ../shared/peers/setup.sh .venv-peers once)
set -euo pipefail
cd "$(dirname "$0")/.."
msdnet=$1 ranet=$2 out=${3:-bench-results/early-exit} rounds=${4:-3} what=${5:-both}
mkdir -p "$out"
py=$PWD/.venv-peers/bin/python
swift build -c release -Xswiftc -target-cpu -Xswiftc native --product dynbench
bin=.build/release/dynbench
cases="ranet:cifar-readme msdnet:cifar-anytime msdnet:cifar-budgeted"
for r in $(seq 1 "$rounds"); do
    if [ "$what" != train ]; then
        (cd scripts && "$py" bench_early_exit_ort.py --msdnet "$msdnet" --ranet "$ranet" --json "$out/ort-$r.json")
        for c in $cases; do
            for t in 1 2; do
                "$bin" exits --model "${c%%:*}" --preset "${c#*:}" --threads "$t" --rounds 3 --json "$out/ours-${c%%:*}_${c#*:}-t$t-$r.json"
            done
        done
    fi
    if [ "$what" != infer ]; then
        (cd scripts && "$py" bench_early_exit_torch.py --msdnet "$msdnet" --ranet "$ranet" --threads 2 --batch 64 --json "$out/torch-train-$r.json")
        "$bin" train-bench --models ranet_cifar-readme msdnet_cifar-anytime msdnet_cifar-budgeted --threads 2 --batch 64 \
            --json "$out/ours-train-$r.json"
    fi
done
"$py" - "$out" "$rounds" "$what" <<'PY'
import glob, json, statistics, sys
out, rounds, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
med = statistics.median
if what != "train":
    ort, ours = {}, {}
    for r in range(1, rounds + 1):
        for row in json.load(open(f"{out}/ort-{r}.json"))["results"]:
            ort.setdefault((row["model"], row["threads"], row["batch"]), []).append(row["median_ms"] / row["batch"])
        for f in glob.glob(f"{out}/ours-*-t*-{r}.json"):
            rep = json.load(open(f))
            ours.setdefault((rep["name"], rep["threads"], 1), []).append(rep["full_ms_per_image_b1"])
            ours.setdefault((rep["name"], rep["threads"], 64), []).append(rep["full_ms_per_image_b64"])
    print(f"\n## Inference, every exit computed: ms per image, medians of {rounds} alternating rounds")
    print("| model | threads | batch | ONNX Runtime | ours | ours ÷ ORT speed |\n|---|---|---|---|---|---|")
    for key in sorted(ort):
        o, s = med(ort[key]), med(ours[key])
        print(f"| {key[0]} | {key[1]} | {key[2]} | {o:.3f} | {s:.3f} | {o / s:.2f}× |")
if what != "infer":
    torch, ours = {}, {}
    for r in range(1, rounds + 1):
        for row in json.load(open(f"{out}/torch-train-{r}.json"))["results"]:
            torch.setdefault((row["model"], row["format"]), []).append(row["img_per_s"])
        for row in json.load(open(f"{out}/ours-train-{r}.json"))["results"]:
            ours.setdefault(row["model"], []).append(row["img_per_s"])
    print(f"\n## Training steps, batch 64, 2 threads: images per second, medians of {rounds} alternating rounds")
    print("| model | PyTorch NCHW | PyTorch channels-last | ours | ours ÷ better PyTorch |\n|---|---|---|---|---|")
    for m in sorted(ours):
        a, b, s = med(torch[(m, "nchw")]), med(torch[(m, "channels_last")]), med(ours[m])
        print(f"| {m} | {a:.1f} | {b:.1f} | {s:.1f} | {s / max(a, b):.2f}× |")
PY
