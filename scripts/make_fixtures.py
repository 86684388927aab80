#!/usr/bin/env python3
"""Generate the committed safetensors test fixtures for DynamicNN.

What it makes
-------------
* ``Tests/DynamicNNTests/Fixtures/ops/<case>.safetensors`` -- one file per op
  test case (conv2d variants, batchnorm, conv+bn, activations, pooling, linear,
  softmax / log_softmax, concat, add, bilinear resize, flatten).  Each file holds
  the inputs ``x`` (and ``x2`` for binary ops), the parameters (``weight``,
  ``bias``; for BN ``gamma``, ``beta``, ``mean``, ``var``) and the expected
  output ``y``.  ``__metadata__`` is ``{"op": <op name>, "params": <JSON>}``.
* ``Tests/BackbonesTests/Fixtures/models/`` (``hash_uniform_check`` in ``Tests/DynamicNNTests/Fixtures/models/``)
    - ``resnet20_state.safetensors``   full ``state_dict()`` of the CIFAR
      ResNet-20 twin (random init, non-trivial BN; includes the int64
      ``num_batches_tracked`` buffers, which the Swift loader must skip).
    - ``resnet20_io.safetensors``      ``x`` [2,3,32,32] and its ``logits``.
    - ``resnet18_io.safetensors``      ``x`` and ``logits`` of CIFAR ResNet-18
      whose weights come from the ``hash_uniform`` rule below (the 11M weights
      are not stored; Swift regenerates them).
    - ``resnet20_hash_io.safetensors`` same, for ResNet-20.
    - ``hash_uniform_check.safetensors`` a few ``hash_uniform`` outputs (plus
      integer seeds / raw hash values in the metadata) so the Swift generator
      can be verified bit-for-bit.

How to run
----------
From the repository root::

    .venv-peers/bin/python scripts/make_fixtures.py

(needs torch, numpy, safetensors).  All randomness uses fixed seeds (one torch
Generator per op case, seeded from the case name; ``torch.manual_seed(0)`` for
the ResNet-20 state), so reruns are byte-identical.

CI never needs Python: the generated fixtures are committed to the repository.
This script only documents (and can regenerate) how they were made.

Numerics: all stored tensors are float32 (except ``num_batches_tracked``).
Expected outputs are computed by PyTorch in float64 from the stored float32
inputs/parameters and then rounded to float32, so they are as close to the
exact answer as float32 allows.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_num_threads(1)  # determinism (and be gentle on small CI/dev boxes)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "Tests", "DynamicNNTests", "Fixtures")
OPS_DIR = os.path.join(FIX, "ops")
MODELS_DIR = os.path.join(ROOT, "Tests", "BackbonesTests", "Fixtures", "models")

WRITTEN: list[str] = []


def _save(path: str, tensors: dict, metadata: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = {}
    for k, v in tensors.items():
        v = v.detach()
        if v.is_floating_point():
            v = v.to(torch.float32)
        out[k] = v.contiguous().clone()
    save_file(out, path, metadata={k: str(v) for k, v in metadata.items()})
    _canonicalize_header(path)
    WRITTEN.append(path)


def _canonicalize_header(path: str) -> None:
    """Make the file byte-reproducible.

    safetensors keeps ``__metadata__`` in a Rust HashMap, so its key order in
    the JSON header changes from run to run.  Rewrite the header with the
    metadata keys sorted (same compact JSON, space-padded to 8 bytes); tensor
    entries and the data section are left untouched.
    """
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n].decode("utf-8"), object_pairs_hook=dict)
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + n:])


# =============================================================================
# 1. Op fixtures
# =============================================================================

def _gen(name: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(zlib.crc32(name.encode()))
    return g


def randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale


def rand(g, *shape, low=0.0, high=1.0):
    return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float32)


def d(t):
    return t.to(torch.float64)


def save_op(case: str, op: str, params: dict, tensors: dict) -> None:
    _save(os.path.join(OPS_DIR, case + ".safetensors"), tensors,
          {"op": op, "params": json.dumps(params, sort_keys=True)})


def make_conv(case, n, cin, cout, hw, k, stride=(1, 1), padding=(0, 0),
              dilation=(1, 1), groups=1, bias=True):
    g = _gen(case)
    kh, kw = k
    x = randn(g, n, cin, *hw)
    fan_in = (cin // groups) * kh * kw
    w = randn(g, cout, cin // groups, kh, kw, scale=1.0 / math.sqrt(fan_in))
    b = randn(g, cout, scale=0.5) if bias else None
    y = F.conv2d(d(x), d(w), d(b) if bias else None, stride=stride,
                 padding=padding, dilation=dilation, groups=groups)
    t = {"x": x, "weight": w, "y": y}
    if bias:
        t["bias"] = b
    params = {"stride": list(stride), "padding": list(padding),
              "dilation": list(dilation), "groups": groups, "bias": bias}
    save_op(case, "conv2d", params, t)


def bn_params(g, c):
    gamma = rand(g, c, low=0.5, high=1.5)
    beta = randn(g, c, scale=0.1)
    mean = randn(g, c, scale=0.5)
    var = rand(g, c, low=0.5, high=2.0)
    return gamma, beta, mean, var


def make_ops() -> None:
    # ---- conv2d -------------------------------------------------------------
    make_conv("conv_3x3_s1_p1", 2, 3, 5, (9, 9), (3, 3), padding=(1, 1))
    make_conv("conv_3x3_s2_p1", 2, 4, 6, (8, 8), (3, 3), stride=(2, 2),
              padding=(1, 1), bias=False)
    make_conv("conv_1x1", 2, 7, 5, (6, 6), (1, 1))
    make_conv("conv_5x5_p2", 2, 3, 4, (7, 7), (5, 5), padding=(2, 2))
    make_conv("conv_grouped", 2, 4, 6, (10, 10), (3, 3), padding=(1, 1), groups=2)
    make_conv("conv_depthwise_s2", 2, 8, 8, (11, 11), (3, 3), stride=(2, 2),
              padding=(1, 1), groups=8)
    make_conv("conv_depthwise_mult2", 2, 3, 6, (7, 7), (3, 3), padding=(1, 1),
              groups=3, bias=False)
    make_conv("conv_dilated", 2, 3, 4, (9, 9), (3, 3), padding=(2, 2),
              dilation=(2, 2))
    make_conv("conv_rect", 2, 3, 4, (8, 9), (1, 3), stride=(2, 1), padding=(0, 1))
    make_conv("conv_stem_3_64", 1, 3, 16, (32, 32), (3, 3), padding=(1, 1))
    make_conv("conv_odd", 2, 5, 9, (23, 23), (3, 3), stride=(2, 2), padding=(0, 0))

    # ---- batchnorm (eval) ---------------------------------------------------
    case = "batchnorm_eval"
    g = _gen(case)
    x = randn(g, 2, 5, 7, 7)
    gamma, beta, mean, var = bn_params(g, 5)
    y = F.batch_norm(d(x), d(mean), d(var), d(gamma), d(beta),
                     training=False, eps=1e-5)
    save_op(case, "batchnorm", {"eps": 1e-5},
            {"x": x, "gamma": gamma, "beta": beta, "mean": mean, "var": var, "y": y})

    # ---- conv + bn (fold) ---------------------------------------------------
    case = "conv_bn_fold"
    g = _gen(case)
    x = randn(g, 2, 4, 8, 8)
    w = randn(g, 6, 4, 3, 3, scale=1.0 / math.sqrt(4 * 9))
    gamma, beta, mean, var = bn_params(g, 6)
    c = F.conv2d(d(x), d(w), None, stride=1, padding=1)
    y = F.batch_norm(c, d(mean), d(var), d(gamma), d(beta), training=False, eps=1e-5)
    save_op(case, "conv_bn", {"stride": [1, 1], "padding": [1, 1], "eps": 1e-5},
            {"x": x, "weight": w, "gamma": gamma, "beta": beta, "mean": mean,
             "var": var, "y": y})

    # ---- activations (x ~ U[-2, 3]) -----------------------------------------
    g = _gen("relu")
    x = rand(g, 2, 3, 5, 5, low=-2.0, high=3.0)
    save_op("relu", "relu", {}, {"x": x, "y": F.relu(d(x))})

    g = _gen("relu1")
    x = rand(g, 2, 3, 5, 5, low=-2.0, high=3.0)
    save_op("relu1", "relu1", {}, {"x": x, "y": d(x).clamp(0.0, 1.0)})

    g = _gen("leaky_relu1")
    x = rand(g, 2, 3, 5, 5, low=-2.0, high=3.0)
    s = 0.1
    xd = d(x)
    y = torch.where(xd < 0, s * xd, torch.where(xd > 1, 1 + s * (xd - 1), xd))
    save_op("leaky_relu1", "leaky_relu1", {"slope": s}, {"x": x, "y": y})

    # ---- pooling ------------------------------------------------------------
    for case, shape, k, st, p in [("maxpool_k3_s2_p1", (2, 3, 9, 9), 3, 2, 1),
                                  ("maxpool_k2_s2", (2, 3, 8, 8), 2, 2, 0)]:
        g = _gen(case)
        x = randn(g, *shape)
        y = F.max_pool2d(d(x), kernel_size=k, stride=st, padding=p)
        save_op(case, "maxpool", {"kernel": [k, k], "stride": [st, st],
                                  "padding": [p, p]}, {"x": x, "y": y})
    for case, shape, k, st, p in [("avgpool_k2_s2", (2, 3, 8, 8), 2, 2, 0),
                                  ("avgpool_k3_s1_p1", (2, 3, 7, 7), 3, 1, 1)]:
        g = _gen(case)
        x = randn(g, *shape)
        y = F.avg_pool2d(d(x), kernel_size=k, stride=st, padding=p,
                         count_include_pad=True)
        save_op(case, "avgpool", {"kernel": [k, k], "stride": [st, st],
                                  "padding": [p, p], "count_include_pad": True},
                {"x": x, "y": y})
    case = "global_avgpool"
    g = _gen(case)
    x = randn(g, 2, 5, 6, 7)
    y = F.adaptive_avg_pool2d(d(x), 1).flatten(1)
    save_op(case, "global_avgpool", {}, {"x": x, "y": y})

    # ---- linear -------------------------------------------------------------
    case = "linear"
    g = _gen(case)
    x = randn(g, 3, 17)
    w = randn(g, 9, 17, scale=1.0 / math.sqrt(17))
    b = randn(g, 9, scale=0.5)
    save_op(case, "linear", {"bias": True},
            {"x": x, "weight": w, "bias": b, "y": F.linear(d(x), d(w), d(b))})

    # ---- softmax / log_softmax ----------------------------------------------
    for case, fn in [("softmax", F.softmax), ("log_softmax", F.log_softmax)]:
        g = _gen(case)
        x = randn(g, 4, 10, scale=3.0)
        save_op(case, case, {"dim": 1}, {"x": x, "y": fn(d(x), dim=1)})

    # ---- concat -------------------------------------------------------------
    case = "concat"
    g = _gen(case)
    x = randn(g, 2, 3, 5, 5)
    x2 = randn(g, 2, 4, 5, 5)
    save_op(case, "concat", {"dim": 1}, {"x": x, "x2": x2, "y": torch.cat([x, x2], 1)})

    # ---- add / add_relu -----------------------------------------------------
    for case, relu in [("add", False), ("add_relu", True)]:
        g = _gen(case)
        x = randn(g, 2, 3, 6, 6)
        x2 = randn(g, 2, 3, 6, 6)
        y = d(x) + d(x2)
        if relu:
            y = F.relu(y)
        save_op(case, "add", {"relu": relu}, {"x": x, "x2": x2, "y": y})

    # ---- bilinear resize, align_corners=True --------------------------------
    for case, shape, size in [("resize_up_5_to_9", (2, 3, 5, 5), (9, 9)),
                              ("resize_up_7_to_16", (2, 3, 7, 7), (16, 16)),
                              ("resize_down_16_to_8", (2, 3, 16, 16), (8, 8)),
                              ("resize_down_9_to_5x7", (2, 3, 9, 9), (5, 7)),
                              ("resize_from_1", (1, 2, 1, 1), (4, 4)),
                              ("resize_to_1", (1, 2, 6, 6), (1, 1)),
                              ("resize_rect", (2, 2, 4, 6), (7, 3))]:
        g = _gen(case)
        x = randn(g, *shape)
        y = F.interpolate(d(x), size=size, mode="bilinear", align_corners=True)
        save_op(case, "resize_bilinear", {"size": list(size), "align_corners": True},
                {"x": x, "y": y})

    # ---- flatten ------------------------------------------------------------
    case = "flatten"
    g = _gen(case)
    x = randn(g, 2, 3, 4, 5)
    save_op(case, "flatten", {"start_dim": 1}, {"x": x, "y": x.flatten(1)})


# =============================================================================
# 2. Model fixtures: PyTorch twin of the CIFAR ResNets (names are the contract)
# =============================================================================

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:   # projection shortcut (option B)
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """widths e.g. (16,32,64) with n blocks each for depth 6n+2, or
    (64,128,256,512) x 2 for ResNet-18; stage strides 1,2,2(,2)."""

    def __init__(self, widths, blocks, num_classes=10):
        super().__init__()
        self.num_stages = len(widths)
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, (w, nb) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(nb):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(cin, w, stride))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet_cifar(depth: int, num_classes: int = 10) -> CifarResNet:
    assert (depth - 2) % 6 == 0, "depth must be 6n+2"
    n = (depth - 2) // 6
    return CifarResNet((16, 32, 64), (n, n, n), num_classes)


def resnet18_cifar(num_classes: int = 10) -> CifarResNet:
    return CifarResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes)


# ---- counter-based weight generator (mirrored in Swift) ---------------------

U64 = np.uint64
MASK64 = (1 << 64) - 1


def fnv1a64(s: str) -> int:
    h = 0xcbf29ce484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001b3) & MASK64
    return h


def mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
        return z ^ (z >> U64(31))


def hash_bits(n: int, seed: int) -> np.ndarray:
    i = np.arange(n, dtype=U64)
    with np.errstate(over="ignore"):
        z = U64(seed) + (i + U64(1)) * U64(0x9E3779B97F4A7C15)
    return mix(z)


def hash_uniform(shape, seed: int, low, high) -> np.ndarray:
    low = np.float32(low)
    high = np.float32(high)
    n = int(np.prod(shape, dtype=np.int64))
    u = (hash_bits(n, seed) >> U64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    out = low + (high - low) * u          # float32 throughout
    assert out.dtype == np.float32
    return out.reshape(shape)


def hash_value_for_key(key: str, shape, state: dict) -> np.ndarray:
    """The weight rule: value of state_dict entry `key` (not num_batches_tracked)."""
    seed = fnv1a64(key)
    rank = len(shape)
    if rank == 4:                                   # conv weight
        fan_in = shape[1] * shape[2] * shape[3]
        b = np.float32(math.sqrt(6.0 / fan_in))
        return hash_uniform(shape, seed, -b, b)
    if rank == 2:                                   # linear weight
        b = np.float32(1.0 / math.sqrt(shape[1]))
        return hash_uniform(shape, seed, -b, b)
    assert rank == 1, key
    prefix = key.rsplit(".", 1)[0]
    sibling_w = state.get(prefix + ".weight")
    if key.endswith(".bias") and sibling_w is not None and sibling_w.dim() == 2:
        b = np.float32(1.0 / math.sqrt(sibling_w.shape[1]))   # linear bias
        return hash_uniform(shape, seed, -b, b)
    if key.endswith(".weight"):                     # BN gamma
        return hash_uniform(shape, seed, 0.5, 1.5)
    if key.endswith(".bias"):                       # BN beta
        return hash_uniform(shape, seed, -0.1, 0.1)
    if key.endswith(".running_mean"):
        return hash_uniform(shape, seed, -0.1, 0.1)
    if key.endswith(".running_var"):
        return hash_uniform(shape, seed, 0.5, 1.5)
    raise ValueError(f"no hash rule for {key}")


def hash_state_dict(model: nn.Module) -> dict:
    state = model.state_dict()
    new = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            new[k] = v.clone()
            continue
        new[k] = torch.from_numpy(hash_value_for_key(k, tuple(v.shape), state).copy())
    return new


def hash_input() -> torch.Tensor:
    return torch.from_numpy(hash_uniform([2, 3, 32, 32], fnv1a64("input"), -1, 1).copy())


def eval_logits_f64(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return m(x.double()).float()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_models() -> None:
    # ---- (a) ResNet-20, torch random init + non-trivial BN ------------------
    torch.manual_seed(0)
    model = resnet_cifar(20)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(c))
                m.weight.copy_(0.5 + torch.rand(c))
                m.bias.copy_(torch.randn(c) * 0.1)
                m.num_batches_tracked.fill_(100)
    model.eval()
    x = torch.randn(2, 3, 32, 32)

    count = n_params(model)
    print(f"ResNet-20 twin: {count} parameters")
    assert count == 272474, count           # 269,722 (option A) + 2,752 projections
    assert 265_000 < count < 280_000

    _save(os.path.join(MODELS_DIR, "resnet20_state.safetensors"), model.state_dict(), {})
    _save(os.path.join(MODELS_DIR, "resnet20_io.safetensors"),
          {"x": x, "logits": eval_logits_f64(model, x)}, {"model": "resnet20_cifar"})

    # ---- (b) hash-weight ResNet-18 and ResNet-20 ----------------------------
    xh = hash_input()
    weights_meta = "hash_uniform rule, see scripts/make_fixtures.py"

    r18 = resnet18_cifar()
    print(f"ResNet-18 twin: {n_params(r18)} parameters")
    assert n_params(r18) == 11_173_962, n_params(r18)
    sd18 = hash_state_dict(r18)
    r18.load_state_dict(sd18, strict=True)
    _save(os.path.join(MODELS_DIR, "resnet18_io.safetensors"),
          {"x": xh, "logits": eval_logits_f64(r18, xh)},
          {"model": "resnet18_cifar", "weights": weights_meta})

    r20 = resnet_cifar(20)
    r20.load_state_dict(hash_state_dict(r20), strict=True)
    _save(os.path.join(MODELS_DIR, "resnet20_hash_io.safetensors"),
          {"x": xh, "logits": eval_logits_f64(r20, xh)},
          {"model": "resnet20_cifar", "weights": weights_meta})

    # ---- generator check ----------------------------------------------------
    a = torch.from_numpy(hash_uniform([7, 5], fnv1a64("a"), -1, 1).copy())
    raw_a = hash_bits(3, fnv1a64("a"))
    meta = {
        "seed_a": str(fnv1a64("a")),
        "seed_conv1.weight": str(fnv1a64("conv1.weight")),
        "seed_input": str(fnv1a64("input")),
        "mix_a_0": str(int(raw_a[0])),
        "mix_a_1": str(int(raw_a[1])),
        "mix_a_2": str(int(raw_a[2])),
        "a": "hash_uniform([7,5], fnv1a64('a'), -1, 1)",
        "conv1.weight": "ResNet-18 conv1.weight [64,3,3,3], range +-sqrt(6/27)",
    }
    _save(os.path.join(FIX, "models", "hash_uniform_check.safetensors"),
          {"a": a, "conv1.weight": sd18["conv1.weight"]}, meta)

    print("ResNet-20 state_dict keys:")
    for k in model.state_dict():
        print("   ", k)
    print("ResNet-18 first 10 keys:", list(r18.state_dict())[:10])
    print("hash a[:5]:", a.flatten()[:5].tolist())


def main() -> None:
    make_ops()
    make_models()
    total = 0
    print(f"\n{len(WRITTEN)} files written:")
    for p in WRITTEN:
        sz = os.path.getsize(p)
        total += sz
        print(f"  {sz:>9}  {os.path.relpath(p, ROOT)}")
    print(f"total fixture size: {total} bytes ({total / 1e6:.2f} MB)")
    assert total < 3_000_000, "fixtures exceed the ~3 MB budget"


if __name__ == "__main__":
    main()
