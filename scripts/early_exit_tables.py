#!/usr/bin/env python3
"""Markdown tables of `dynbench exits-plot --json` output (Benchmarks/results/early-exit-cifar10.json):
per network its training, anytime accuracy and t_k per exit, the budgeted sweep at a few p, the
measured-vs-expected check of the partitioned execution, the millisecond budgets, and the
low-budget comparison.

    python3 scripts/early_exit_tables.py Benchmarks/results/early-exit-cifar10.json
"""

import json
import sys


def num(x):
    return float(x) if isinstance(x, str) else x


def main(path: str) -> None:
    s = json.load(open(path))
    models = s["models"]
    print(f"### {s['title']}: the networks\n")
    print("| network | epochs | training s | exits | last exit: ref MFLOPs | test acc | full ms/img b1 | full ms/img b64 |")
    print("|---|---|---|---|---|---|---|---|")
    for m in models:
        last = m["exits"][-1]
        print(f"| {m['name']} | {m.get('epochs', '–')} | {m.get('train_seconds', 0):.0f} | {len(m['exits'])} | {last['mflops']:.2f} | "
              f"{last['test_acc'] * 100:.2f} % | {m['full_ms_per_image_b1']:.3f} | {m['full_ms_per_image_b64']:.3f} |")
    for m in models:
        if len(m["exits"]) < 2:
            continue
        fK, t1K, t64K = m["exits"][-1]["mflops"], m["exits"][-1]["ms_b1"], m["exits"][-1]["ms_b64"]
        print(f"\n#### {m['name']}: every exit (anytime; t_k = every sample leaving at k, {m['threads']} threads)\n")
        print("| exit | ref MFLOPs | test acc | ensemble acc | t_k b1 ms | t_k/t_K b1 (bound) | t_k b64 ms | t_k/t_K b64 (bound) |")
        print("|---|---|---|---|---|---|---|---|")
        for e in m["exits"]:
            f = e["mflops"] / fK
            b1, b64 = f / 0.85 + 0.05, f / 0.85 + 0.02
            r1, r64 = e["ms_b1"] / t1K, e["ms_b64"] / t64K
            print(f"| {e['exit']} | {e['mflops']:.2f} | {e['test_acc'] * 100:.2f} % | {e['test_acc_ensemble'] * 100:.2f} % | "
                  f"{e['ms_b1']:.3f} | {r1:.3f} ({b1:.3f}) {'✓' if r1 <= b1 else '✗'} | {e['ms_b64']:.3f} | "
                  f"{r64:.3f} ({b64:.3f}) {'✓' if r64 <= b64 else '✗'} |")
        print(f"\n{m['name']}: budgeted operating points (thresholds from the validation split, scored on the test set); "
              "measured = the deployment forward timed over the test set (batch 64) and its first 1,000 images (batch 1), "
              "against Σ share_k · t_k of the same images\n")
        print("| p | expected MFLOPs | test acc | exp. ms b64 | measured b64 | ratio | exp. ms b1 | measured b1 | ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for p in m["budgeted"]:
            if p.get("ms_per_image_b64") is None:
                continue
            r64 = p["ms_per_image_b64"] / p["expected_ms_b64"]
            r1 = p["ms_per_image_b1"] / p["expected_ms_b1_timed"]
            print(f"| {p['p']:.2f} | {p['expected_mflops']:.2f} | {p['test_acc'] * 100:.2f} % | {p['expected_ms_b64']:.3f} | "
                  f"{p['ms_per_image_b64']:.3f} | {r64:.3f} {'✓' if abs(r64 - 1) <= 0.1 else '✗'} | {p['expected_ms_b1_timed']:.3f} | "
                  f"{p['ms_per_image_b1']:.3f} | {r1:.3f} {'✓' if abs(r1 - 1) <= 0.1 else '✗'} |")
        if m.get("ms_budgets"):
            print(f"\n{m['name']}: budgets in milliseconds per image (thresholds from the validation split)\n")
            print("| budget ms | batch | expected ms (validation) | expected ms (timed images) | measured ms | test acc | expected MFLOPs |")
            print("|---|---|---|---|---|---|---|")
            for b in m["ms_budgets"]:
                print(f"| {b['budget_ms']:.2f} | {b['batch']} | {b['expected_ms_val']:.3f} | {b['expected_ms_timed']:.3f} | "
                      f"{b['ms_per_image']:.3f} | {b['test_acc'] * 100:.2f} % | {b['expected_mflops']:.2f} |")
    print("\n#### Budgeted test accuracy at low budgets (linear between operating points)\n")
    names = [m["name"] for m in models if m.get("budgeted")]
    print("| reference MFLOPs | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for row in s["low_budget"]:
        cells = [f"{row['test_acc'][n] * 100:.2f} %" if n in row["test_acc"] else "–" for n in names]
        print(f"| {row['mflops']:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
