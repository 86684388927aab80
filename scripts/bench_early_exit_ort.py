#!/usr/bin/env python3
"""ONNX Runtime on the authors' RANet and MSDNet (their model code, imported from the checkouts
given on the command line, exported with torch.onnx at opset 17, every exit an output): median
ms per forward and images per second at each batch size and thread count. The exported model is
checked against PyTorch first.

    .venv-peers/bin/python scripts/bench_early_exit_ort.py --msdnet /path/MSDNet-PyTorch \\
        --ranet /path/RANet-pytorch [--threads 1 2] [--batch 1 64] [--repeats 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from contextlib import redirect_stdout

import numpy as np
import onnxruntime as ort
import torch

from make_early_exit_fixtures import MSDNET, RANET, import_from, msdnet_args, ranet_args
from make_fixtures import hash_state_dict

CASES = {"ranet_cifar-readme": ("ranet", RANET["ranet_cifar_readme"]),
         "msdnet_cifar-anytime": ("msdnet", MSDNET["msdnet_cifar_anytime"]),
         "msdnet_cifar-budgeted": ("msdnet", MSDNET["msdnet_cifar_budgeted"])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--msdnet", required=True)
    p.add_argument("--ranet", required=True)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--cases", nargs="+", default=list(CASES))
    p.add_argument("--json")
    a = p.parse_args()
    msdnet, _ = import_from(a.msdnet, "models.msdnet")
    ranet, _ = import_from(a.ranet, "models.RANet")
    rows = []
    tmp = tempfile.mkdtemp()
    for name in a.cases:
        family, kw = CASES[name]
        with redirect_stdout(io.StringIO()):
            model = ranet.RANet(ranet_args(**kw)) if family == "ranet" else msdnet.MSDNet(msdnet_args(**kw))
        model.load_state_dict(hash_state_dict(model))
        model.eval()
        path = os.path.join(tmp, f"{name}.onnx")
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            ref = model(x)
        torch.onnx.export(model, (x,), path, opset_version=17, input_names=["input"],
                          output_names=[f"exit{k}" for k in range(len(ref))], dynamic_axes={"input": {0: "n"}}, dynamo=False)
        for t in a.threads:
            so = ort.SessionOptions()
            so.intra_op_num_threads = t
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            got = sess.run(None, {"input": x.numpy()})
            err = max(float(np.abs(g - r.numpy()).max() / np.abs(r.numpy()).max()) for g, r in zip(got, ref))
            for b in a.batch:
                xb = np.random.default_rng(0).standard_normal((b, 3, 32, 32)).astype(np.float32)
                for _ in range(3):
                    sess.run(None, {"input": xb})
                times = []
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    sess.run(None, {"input": xb})
                    times.append((time.perf_counter() - t0) * 1e3)
                ms = statistics.median(times)
                rows.append({"framework": "onnxruntime", "model": name, "threads": t, "batch": b, "median_ms": ms,
                             "min_ms": min(times), "max_ms": max(times), "img_per_s": b / ms * 1e3, "max_rel_error_vs_torch": err})
                print(f"{name:24s} threads {t} batch {b:3d}: {ms:9.3f} ms  {b / ms * 1e3:8.1f} img/s  (vs torch {err:.1e})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": {"onnxruntime": ort.__version__, "torch": torch.__version__}, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
