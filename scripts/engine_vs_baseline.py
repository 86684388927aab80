#!/usr/bin/env python3
"""Median per-round speed ratio (baseline ms ÷ new ms; > 1: the new build is faster) of the
result files written by scripts/engine_vs_baseline.sh. Usage: engine_vs_baseline.py OUTDIR [--markdown]"""
import glob, json, os, statistics, sys

out = sys.argv[1]
rows = {}   # (pass, model, threads, batch) -> {round: {label: ms}}
for path in glob.glob(os.path.join(out, "*.json")):
    kind, label, rnd = os.path.basename(path)[:-5].split("-")
    data = json.load(open(path))
    for r in data["results"]:
        key = (kind, r["model"], r["threads"], r["batch"])
        rows.setdefault(key, {}).setdefault(int(rnd), {})[label] = r["median_ms"]
machine = json.load(open(glob.glob(os.path.join(out, "*.json"))[0]))["info"]
print(f"machine: {machine.get('cpu')}, {machine.get('target')}, peak/core {machine.get('peak_gflops_per_core_measured')} GFLOP/s")
print("| pass | model | threads | batch | rounds | baseline ms (median) | engine ms (median) | median ratio | min–max ratio |")
print("|---|---|---|---|---|---|---|---|---|")
for key in sorted(rows):
    per = rows[key]
    ratios = [v["old"] / v["new"] for v in per.values() if "old" in v and "new" in v]
    olds = [v["old"] for v in per.values() if "old" in v]
    news = [v["new"] for v in per.values() if "new" in v]
    kind, model, t, b = key
    print(f"| {'training step' if kind == 'train' else 'inference'} | {model} | {t} | {b} | {len(ratios)} | "
          f"{statistics.median(olds):.3f} | {statistics.median(news):.3f} | {statistics.median(ratios):.3f}× | "
          f"{min(ratios):.2f}–{max(ratios):.2f} |")
