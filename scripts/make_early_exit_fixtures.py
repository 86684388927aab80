#!/usr/bin/env python3
"""Parity fixtures for MSDNet and RANet, made by the authors' own PyTorch code.

The authors' repositories are not part of this one: pass their checkouts on the command line
(kalviny/MSDNet-PyTorch, yangle15/RANet-pytorch). For every configuration this builds the
authors' model, gives every state_dict entry a value from the ``hash_uniform`` rule of
scripts/make_fixtures.py (non-trivial batch-norm statistics included), and writes

    Tests/EarlyExitTests/Fixtures/{name}_hash_io.safetensors

with the tensor ``input`` [2, 3, 32, 32] and ``exit{k}`` [2, classes], the float64 eval-mode
logits of every exit (0-based), and in the metadata the state_dict keys (num_batches_tracked
dropped) and the authors' op_counter figures per exit (cumulative MFLOPs and parameters).
The weights themselves are not stored: the Swift test regenerates them from the keys. With
``--weights-dir DIR`` the full state_dict is also written as DIR/{name}.safetensors (for
``dynbench check-logits``).

    .venv-peers/bin/python scripts/make_early_exit_fixtures.py --msdnet /path/MSDNet-PyTorch \\
        [--ranet /path/RANet-pytorch] [--weights-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
from contextlib import redirect_stdout
from types import SimpleNamespace

import torch

from make_fixtures import ROOT, _save, fnv1a64, hash_state_dict, hash_uniform

OUT = os.path.join(ROOT, "Tests", "EarlyExitTests", "Fixtures")

MSDNET = {
    "msdnet_cifar_budgeted": dict(nBlocks=5, stepmode="lin_grow", step=1, base=1),
    "msdnet_cifar_anytime": dict(nBlocks=7, stepmode="even", step=2, base=4),
}


def msdnet_args(**kw) -> SimpleNamespace:
    a = SimpleNamespace(data="cifar10", nChannels=16, growthRate=6, grFactor="1-2-4", bnFactor="1-2-4",
                        bottleneck=True, reduction=0.5, prune="max")
    for k, v in kw.items():
        setattr(a, k, v)
    a.grFactor = list(map(int, a.grFactor.split("-")))
    a.bnFactor = list(map(int, a.bnFactor.split("-")))
    a.nScales = len(a.grFactor)
    return a


RANET = {
    "ranet_cifar_readme": dict(step=2, stepmode="lg", scale_list="1-2-3", grFactor="4-2-1", bnFactor="4-2-1"),
    "ranet_cifar_script": dict(step=4, stepmode="even", scale_list="1-2-3-3", grFactor="4-2-1-1", bnFactor="4-2-1-1"),
}


def ranet_args(**kw) -> SimpleNamespace:
    a = SimpleNamespace(data="cifar10", nBlocks=2, block_step=2, nChannels=16, growthRate=6, compress_factor=0.25,
                        reduction=0.5, bottleneck=True)
    for k, v in kw.items():
        setattr(a, k, v)
    a.grFactor = list(map(int, a.grFactor.split("-")))
    a.bnFactor = list(map(int, a.bnFactor.split("-")))
    a.scale_list = list(map(int, a.scale_list.split("-")))
    a.nScales = len(a.grFactor)
    return a


def import_from(repo: str, module: str):
    sys.path.insert(0, repo)
    try:
        for name in [m for m in sys.modules if m == "models" or m.startswith("models.") or m == "op_counter"]:
            del sys.modules[name]
        return importlib.import_module(module), importlib.import_module("op_counter")
    finally:
        sys.path.pop(0)


def exit_figures(op_counter, model) -> tuple[list[float], list[int]]:
    """The authors' counter: cumulative FLOPs and parameters at every classifier."""
    op_counter.cls_ops, op_counter.cls_params = [], []     # module globals it never resets
    with redirect_stdout(io.StringIO()):
        op_counter.measure_model(model, 32, 32)
    return [x / 1e6 for x in op_counter.cls_ops], [int(p) for p in op_counter.cls_params]


def write(name: str, model: torch.nn.Module, op_counter, weights_dir: str | None) -> None:
    flops, params = exit_figures(op_counter, model)
    state = hash_state_dict(model)
    model.load_state_dict(state, strict=True)
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    x = torch.from_numpy(hash_uniform([2, 3, 32, 32], fnv1a64("early-exit-input"), -1, 1).copy())
    m = model.double().eval()
    with torch.no_grad():
        outs = m(x.double())
    tensors = {"input": x}
    for k, o in enumerate(outs):
        tensors[f"exit{k}"] = o.float()
    path = os.path.join(OUT, f"{name}_hash_io.safetensors")
    _save(path, tensors, {"model": name, "weights": "hash_uniform rule, see scripts/make_fixtures.py",
                          "input": "hash_uniform([2,3,32,32], fnv1a64('early-exit-input'), -1, 1)",
                          "keys": json.dumps(keys), "mflops": json.dumps(flops), "params": json.dumps(params)})
    print(f"{name}: {len(keys)} keys, {sum(p.numel() for p in model.parameters())} parameters, exits {len(outs)}, "
          f"MFLOPs {[round(f, 2) for f in flops]} -> {path}")
    if weights_dir:
        os.makedirs(weights_dir, exist_ok=True)
        _save(os.path.join(weights_dir, f"{name}.safetensors"),
              {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, {"model": name})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--msdnet", required=True, help="checkout of kalviny/MSDNet-PyTorch")
    p.add_argument("--ranet", help="checkout of yangle15/RANet-pytorch")
    p.add_argument("--weights-dir")
    a = p.parse_args()
    msdnet, op_counter = import_from(a.msdnet, "models.msdnet")
    for name, kw in MSDNET.items():
        with redirect_stdout(io.StringIO()):
            model = msdnet.MSDNet(msdnet_args(**kw))
        write(name, model, op_counter, a.weights_dir)
    if a.ranet:
        ranet, op_counter = import_from(a.ranet, "models.RANet")
        for name, kw in RANET.items():
            torch.manual_seed(0)
            with redirect_stdout(io.StringIO()):
                model = ranet.RANet(ranet_args(**kw))
            write(name, model, op_counter, a.weights_dir)


if __name__ == "__main__":
    main()
