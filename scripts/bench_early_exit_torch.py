#!/usr/bin/env python3
"""PyTorch CPU training steps of the authors' RANet and MSDNet (their own model code, imported from
the checkouts given on the command line): batch of random 32x32 images, the sum of every exit's
cross-entropy, backward, SGD (momentum 0.9, weight decay 1e-4); NCHW and channels-last memory
formats. Prints the median step time and images per second per case, JSON with --json.

    .venv-peers/bin/python scripts/bench_early_exit_torch.py --msdnet /path/MSDNet-PyTorch \\
        --ranet /path/RANet-pytorch --threads 2 --batch 64 [--steps 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from contextlib import redirect_stdout

import torch
import torch.nn.functional as F

from make_early_exit_fixtures import MSDNET, RANET, import_from, msdnet_args, ranet_args

CASES = {"ranet_cifar-readme": ("ranet", RANET["ranet_cifar_readme"]),
         "msdnet_cifar-anytime": ("msdnet", MSDNET["msdnet_cifar_anytime"]),
         "msdnet_cifar-budgeted": ("msdnet", MSDNET["msdnet_cifar_budgeted"])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--msdnet", required=True)
    p.add_argument("--ranet", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    msdnet, _ = import_from(a.msdnet, "models.msdnet")
    ranet, _ = import_from(a.ranet, "models.RANet")
    rows = []
    for name, (family, kw) in CASES.items():
        for fmt in ["nchw", "channels_last"]:
            torch.manual_seed(0)
            with redirect_stdout(io.StringIO()):
                model = ranet.RANet(ranet_args(**kw)) if family == "ranet" else msdnet.MSDNet(msdnet_args(**kw))
            model.train()
            x = torch.randn(a.batch, 3, 32, 32)
            y = torch.randint(0, 10, (a.batch,))
            if fmt == "channels_last":
                model = model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
            times = []
            for i in range(a.warmup + a.steps):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                loss = sum(F.cross_entropy(o, y) for o in model(x))
                loss.backward()
                opt.step()
                if i >= a.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
            ms = statistics.median(times)
            rows.append({"framework": "pytorch-train", "model": name, "format": fmt, "threads": a.threads, "batch": a.batch,
                         "median_ms": ms, "min_ms": min(times), "max_ms": max(times), "img_per_s": a.batch / ms * 1e3})
            print(f"{name:24s} {fmt:14s} threads {a.threads} batch {a.batch}: {ms:8.1f} ms  {a.batch / ms * 1e3:7.1f} img/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": {"torch": torch.__version__}, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
