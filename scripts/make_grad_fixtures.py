#!/usr/bin/env python3
"""Generate the committed training fixtures: PyTorch gradients, optimizer steps, LR schedules.

What it makes (all under ``Tests/DynamicNNTests/Fixtures/``)
-------------------------------------------------------------
* ``grad/<case>.safetensors`` -- one file per backward case.  Each holds the
  forward inputs and parameters, the upstream gradient ``dy`` and PyTorch's
  gradients (``dx``, ``dweight``, ``dbias``, …).  ``__metadata__`` is
  ``{"op": <op>, "params": <JSON>}``.  Ops: ``conv2d`` (stride, padding,
  dilation, groups, depthwise), ``batchnorm_train`` (also the output ``y`` and
  the updated running statistics), ``linear``, ``cross_entropy`` (integer
  ``labels``; ``loss`` is a 1-element tensor; with and without label
  smoothing), ``resize`` (bilinear, align_corners=True, up and down),
  ``maxpool`` / ``avgpool``.
* ``grad/optim.safetensors`` -- three fixed parameters ``p0 p1 p2`` and, for
  each of three steps, fixed gradients ``grad.<step>.<i>``; the parameters
  after each step under SGD (two groups, momentum 0.9, Nesterov, weight decay;
  ``sgd.<step>.<i>``), Adam (``adam.*``) and AdamW (``adamw.*``).  The
  hyper-parameters are in ``__metadata__["params"]``.
* ``grad/schedules.safetensors`` -- learning rates of MultiStepLR, CosineAnnealingLR
  and LinearLR warm-up followed by cosine (SequentialLR), one per epoch.
* ``data/*.gz`` -- small gzip'd IDX files for the Swift inflate: a stored-block
  member, a fixed-Huffman member and a dynamic-Huffman member.  Their content
  follows formulas the Swift test recomputes (see ``idx_images``).

How to run
----------
From the repository root::

    .venv-peers/bin/python scripts/make_grad_fixtures.py

Gradients are computed by PyTorch in float64 from the stored float32 inputs,
then rounded to float32.  Optimizer steps run in float32, as in training.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "Tests", "DynamicNNTests", "Fixtures")
GRAD_DIR = os.path.join(FIX, "grad")
DATA_DIR = os.path.join(ROOT, "Tests", "DynamicDataTests", "Fixtures", "data")


def save(name: str, tensors: dict, metadata: dict) -> None:
    os.makedirs(GRAD_DIR, exist_ok=True)
    out = {}
    for k, v in tensors.items():
        v = v.detach()
        if v.is_floating_point():
            v = v.to(torch.float32)
        out[k] = v.contiguous().clone()
    path = os.path.join(GRAD_DIR, name + ".safetensors")
    save_file(out, path, metadata={k: str(v) for k, v in sorted(metadata.items())})
    _canonicalize_header(path)


def _canonicalize_header(path: str) -> None:
    """Sort the ``__metadata__`` keys so reruns are byte-identical (see make_fixtures.py)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + n:])


def gen(name: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(zlib.crc32(name.encode()))
    return g


def randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale


def leaf(t):
    """float64 leaf requiring grad, from a float32 tensor."""
    return t.detach().to(torch.float64).requires_grad_(True)


# ---------------------------------------------------------------------------
# Backward cases
# ---------------------------------------------------------------------------

def conv_case(name, n, cin, cout, hw, k, stride=1, padding=0, dilation=1, groups=1, bias=True):
    g = gen(name)
    x = randn(g, n, cin, *hw)
    w = randn(g, cout, cin // groups, k, k, scale=1 / math.sqrt(cin // groups * k * k))
    b = randn(g, cout, scale=0.5) if bias else None
    xd, wd = leaf(x), leaf(w)
    bd = leaf(b) if bias else None
    y = F.conv2d(xd, wd, bd, stride=stride, padding=padding, dilation=dilation, groups=groups)
    dy = randn(g, *y.shape)
    y.backward(dy.to(torch.float64))
    t = {"x": x, "weight": w, "dy": dy, "dx": xd.grad, "dweight": wd.grad}
    if bias:
        t["bias"] = b
        t["dbias"] = bd.grad
    params = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    save(name, t, {"op": "conv2d", "params": json.dumps(params, sort_keys=True)})


def batchnorm_case(name, shape, momentum=0.1, eps=1e-5):
    g = gen(name)
    c = shape[1]
    x = randn(g, *shape, scale=2.0) + 0.5
    gamma = 0.5 + torch.rand(c, generator=g)
    beta = randn(g, c, scale=0.3)
    rmean = randn(g, c, scale=0.2)
    rvar = 0.5 + torch.rand(c, generator=g)
    bn = nn.BatchNorm2d(c, eps=eps, momentum=momentum).double() if len(shape) == 4 \
        else nn.BatchNorm1d(c, eps=eps, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
        bn.running_mean.copy_(rmean)
        bn.running_var.copy_(rvar)
    bn.train()
    xd = leaf(x)
    y = bn(xd)
    dy = randn(g, *shape)
    y.backward(dy.to(torch.float64))
    save(name, {"x": x, "gamma": gamma, "beta": beta, "running_mean": rmean, "running_var": rvar,
                "dy": dy, "y": y, "dx": xd.grad, "dgamma": bn.weight.grad, "dbeta": bn.bias.grad,
                "running_mean_after": bn.running_mean, "running_var_after": bn.running_var},
         {"op": "batchnorm_train", "params": json.dumps({"eps": eps, "momentum": momentum})})


def linear_case(name, n, fin, fout):
    g = gen(name)
    x, w, b = randn(g, n, fin), randn(g, fout, fin, scale=1 / math.sqrt(fin)), randn(g, fout)
    xd, wd, bd = leaf(x), leaf(w), leaf(b)
    y = F.linear(xd, wd, bd)
    dy = randn(g, *y.shape)
    y.backward(dy.to(torch.float64))
    save(name, {"x": x, "weight": w, "bias": b, "dy": dy, "dx": xd.grad, "dweight": wd.grad,
                "dbias": bd.grad}, {"op": "linear", "params": "{}"})


def cross_entropy_case(name, n, c, smoothing):
    g = gen(name)
    logits = randn(g, n, c, scale=2.0)
    labels = torch.randint(0, c, (n,), generator=g)
    ld = leaf(logits)
    loss = F.cross_entropy(ld, labels, label_smoothing=smoothing)
    loss.backward()
    save(name, {"logits": logits, "labels": labels, "loss": loss.reshape(1), "dlogits": ld.grad},
         {"op": "cross_entropy", "params": json.dumps({"label_smoothing": smoothing})})


def resize_case(name, shape, out_hw):
    g = gen(name)
    x = randn(g, *shape)
    xd = leaf(x)
    y = F.interpolate(xd, size=out_hw, mode="bilinear", align_corners=True)
    dy = randn(g, *y.shape)
    y.backward(dy.to(torch.float64))
    save(name, {"x": x, "dy": dy, "y": y, "dx": xd.grad},
         {"op": "resize", "params": json.dumps({"size": list(out_hw)})})


def pool_case(name, kind, shape, k, stride, padding, count_include_pad=True):
    g = gen(name)
    # A permutation keeps every window's maximum unique (PyTorch's tie rule is not under test).
    x = (torch.randperm(math.prod(shape), generator=g).to(torch.float32) / 7.0).reshape(shape)
    xd = leaf(x)
    if kind == "maxpool":
        y = F.max_pool2d(xd, k, stride, padding)
    else:
        y = F.avg_pool2d(xd, k, stride, padding, count_include_pad=count_include_pad)
    dy = randn(g, *y.shape)
    y.backward(dy.to(torch.float64))
    params = {"kernel": k, "stride": stride, "padding": padding, "count_include_pad": count_include_pad}
    save(name, {"x": x, "dy": dy, "dx": xd.grad}, {"op": kind, "params": json.dumps(params, sort_keys=True)})


def make_backward_cases():
    conv_case("conv_3x3_s1_p1", 2, 3, 5, (7, 9), 3, padding=1)
    conv_case("conv_3x3_s2_p1_nobias", 2, 4, 6, (9, 8), 3, stride=2, padding=1, bias=False)
    conv_case("conv_1x1", 2, 7, 5, (5, 6), 1)
    conv_case("conv_1x1_s2", 2, 6, 4, (7, 7), 1, stride=2, bias=False)
    conv_case("conv_dilated", 2, 3, 4, (9, 9), 3, padding=2, dilation=2)
    conv_case("conv_grouped", 2, 4, 6, (6, 7), 3, padding=1, groups=2)
    conv_case("conv_depthwise", 2, 5, 5, (8, 9), 3, padding=1, groups=5)
    conv_case("conv_depthwise_mult2_s2", 2, 3, 6, (9, 9), 3, stride=2, padding=1, groups=3, bias=False)
    conv_case("conv_5x5_odd", 3, 3, 9, (11, 13), 5, stride=2, padding=2)
    batchnorm_case("batchnorm_train_2d", (4, 3, 5, 6))
    batchnorm_case("batchnorm_train_1d", (6, 5), momentum=0.3)
    linear_case("linear", 5, 9, 4)
    cross_entropy_case("cross_entropy", 6, 10, 0.0)
    cross_entropy_case("cross_entropy_smooth", 6, 10, 0.1)
    resize_case("resize_up", (2, 3, 4, 5), (9, 7))
    resize_case("resize_down", (2, 2, 9, 8), (4, 3))
    pool_case("maxpool_k3_s2_p1", "maxpool", (2, 3, 7, 8), 3, 2, 1)
    pool_case("avgpool_k3_s2_p1", "avgpool", (2, 3, 7, 8), 3, 2, 1)
    pool_case("avgpool_k2_s2", "avgpool", (2, 3, 6, 5), 2, 2, 0)


# ---------------------------------------------------------------------------
# Optimizers and schedules
# ---------------------------------------------------------------------------

SHAPES = [(4, 3), (5,), (2, 2, 3)]
STEPS = 3


def make_optimizer_case():
    g = gen("optim")
    init = [randn(g, *s) for s in SHAPES]
    grads = [[randn(g, *s) for s in SHAPES] for _ in range(STEPS)]
    tensors = {f"p{i}": p for i, p in enumerate(init)}
    for s in range(STEPS):
        for i, gr in enumerate(grads[s]):
            tensors[f"grad.{s}.{i}"] = gr

    params = {
        "sgd": {"groups": [{"params": [0, 1], "lr": 0.1, "weight_decay": 0.01},
                           {"params": [2], "lr": 0.05, "weight_decay": 0.0}],
                "momentum": 0.9, "nesterov": True},
        "adam": {"lr": 0.01, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8},
        "adamw": {"lr": 0.01, "weight_decay": 0.1, "betas": [0.9, 0.999], "eps": 1e-8},
    }

    def run(prefix, make):
        ps = [torch.nn.Parameter(p.clone()) for p in init]
        opt = make(ps)
        for s in range(STEPS):
            for p, gr in zip(ps, grads[s]):
                p.grad = gr.clone()
            opt.step()
            for i, p in enumerate(ps):
                tensors[f"{prefix}.{s}.{i}"] = p.detach().clone()

    sgd = params["sgd"]
    run("sgd", lambda ps: torch.optim.SGD(
        [{"params": [ps[i] for i in grp["params"]], "lr": grp["lr"], "weight_decay": grp["weight_decay"]}
         for grp in sgd["groups"]], lr=0.1, momentum=sgd["momentum"], nesterov=sgd["nesterov"]))
    a = params["adam"]
    run("adam", lambda ps: torch.optim.Adam(ps, lr=a["lr"], betas=tuple(a["betas"]), eps=a["eps"],
                                            weight_decay=a["weight_decay"], foreach=False))
    w = params["adamw"]
    run("adamw", lambda ps: torch.optim.AdamW(ps, lr=w["lr"], betas=tuple(w["betas"]), eps=w["eps"],
                                              weight_decay=w["weight_decay"], foreach=False))
    save("optim", tensors, {"op": "optimizer", "params": json.dumps(params, sort_keys=True)})


def make_schedules():
    epochs = 12

    def lrs(make):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make(opt)
        out = []
        for _ in range(epochs):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return torch.tensor(out, dtype=torch.float64)

    S = torch.optim.lr_scheduler
    t = {
        "multistep": lrs(lambda o: S.MultiStepLR(o, milestones=[3, 7], gamma=0.1)),
        "cosine": lrs(lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001)),
        "warmup_cosine": lrs(lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=4),
                                                          S.CosineAnnealingLR(o, T_max=8)], milestones=[4])),
    }
    params = {"base_lr": 0.1, "multistep": {"milestones": [3, 7], "gamma": 0.1},
              "cosine": {"T_max": 10, "eta_min": 0.001},
              "warmup_cosine": {"start_factor": 0.1, "total_iters": 4, "T_max": 8}}
    save("schedules", t, {"op": "schedules", "params": json.dumps(params, sort_keys=True)})


# ---------------------------------------------------------------------------
# gzip'd IDX files
# ---------------------------------------------------------------------------

def idx_images(n, h, w):
    """IDX3 bytes whose pixel (i, r, c) = (i·7 + r·r + 3·c) mod 256 (recomputed by the Swift test)."""
    head = struct.pack(">BBBBIII", 0, 0, 8, 3, n, h, w)
    return head + bytes((i * 7 + r * r + 3 * c) % 256 for i in range(n) for r in range(h) for c in range(w))


def idx_labels(n):
    """IDX1 bytes with label i = (i·3) mod 10."""
    return struct.pack(">BBBBI", 0, 0, 8, 1, n) + bytes((i * 3) % 10 for i in range(n))


def gzip_bytes(data: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)   # wbits 31: gzip container
    return c.compress(data) + c.flush()


def make_gzip_files():
    os.makedirs(DATA_DIR, exist_ok=True)
    files = {
        # Level 0: stored blocks; a short labels file: fixed Huffman; images: dynamic Huffman.
        "stored-labels-idx1-ubyte.gz": gzip_bytes(idx_labels(40), 0),
        "train-labels-idx1-ubyte.gz": gzip_bytes(idx_labels(30), 9),
        "train-images-idx3-ubyte.gz": gzip_bytes(idx_images(30, 28, 28), 9),
    }
    for name, blob in files.items():
        with open(os.path.join(DATA_DIR, name), "wb") as f:
            f.write(blob)
        assert gzip.decompress(blob)  # sanity


if __name__ == "__main__":
    make_backward_cases()
    make_optimizer_case()
    make_schedules()
    make_gzip_files()
    total = sum(os.path.getsize(os.path.join(d, f)) for d in (GRAD_DIR, DATA_DIR) for f in os.listdir(d))
    print(f"wrote fixtures: {total} bytes")
