#!/usr/bin/env python3
"""Writes the safetensors interop fixtures used by Tests/DynamicNNTests/SafeTensorsTests.swift.

    python_written.safetensors   written by the official `safetensors` package (torch
                                 backend): F32/F16/BF16/F64 tensors with special values,
                                 integer/bool entries, a scalar, an empty tensor and
                                 __metadata__.
    python_expected.safetensors  for every floating entry above, its Float32 value as an
                                 F32 tensor of the same name and shape (F16 and F64 widened/
                                 rounded by numpy, BF16 widened by torch).

Run from anywhere with the peers venv:
    .venv-peers/bin/python scripts/make_safetensors_fixtures.py
"""

import json
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save, save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "DynamicNNTests" / "Fixtures" / "safetensors"

METADATA = {
    "format": "pt",
    "producer": "scripts/make_safetensors_fixtures.py",
    "note": 'quote " backslash \\ newline \n tab \t unicode é ✓ 🚀',
}


def from_bits(bits, int_dtype, float_dtype):
    """A float array holding exactly the given bit patterns."""
    return np.array(bits, dtype=np.uint64).astype(int_dtype).view(float_dtype)


def f32_values():
    special = [
        0x00000000, 0x80000000,  # ±0
        0x00000001, 0x80000001,  # ± smallest subnormal
        0x007FFFFF,              # largest subnormal
        0x00800000,              # smallest normal
        0x7F7FFFFF, 0xFF7FFFFF,  # ± max finite
        0x7F800000, 0xFF800000,  # ±inf
        0x7FC00000, 0xFFC00000, 0x7FC00001, 0x7F800001,  # NaNs (quiet, negative, payload, signalling)
        0x3F800000, 0x40490FDB,  # 1, pi
    ]
    ramp = [np.float32(i * 0.37 - 5.0).view(np.uint32) for i in range(24)]
    return from_bits(special + ramp, np.uint32, np.float32).reshape(2, 4, 5)


def f16_bits():
    special = [
        0x0000, 0x8000,  # ±0
        0x0001, 0x8001,  # ± smallest subnormal
        0x03FF, 0x0400,  # largest subnormal, smallest normal
        0x7BFF, 0xFBFF,  # ± max finite (65504)
        0x7C00, 0xFC00,  # ±inf
        0x7E00, 0xFE00, 0x7C01, 0x7E2A,  # NaNs
        0x3C00, 0x3555,  # 1, ~1/3
    ]
    return special + list(range(3, 65536, 251))


def bf16_bits():
    special = [
        0x0000, 0x8000,  # ±0
        0x0001, 0x8001,  # ± smallest subnormal
        0x007F, 0x0080,  # largest subnormal, smallest normal
        0x7F7F, 0xFF7F,  # ± max finite
        0x7F80, 0xFF80,  # ±inf
        0x7FC0, 0xFFC0, 0x7F81, 0x7FEA,  # NaNs
        0x3F80, 0x4049,  # 1, ~pi
    ]
    return special + list(range(5, 65536, 257))


def f64_values():
    f32max = float(np.finfo(np.float32).max)
    return np.array([
        0.0, -0.0, 1.0 / 3.0, -2.0 / 3.0, 0.1,
        1e-40, -1e-45, 1.4e-45, 7e-46, 1e-50,   # float32 subnormals, underflow to ±0
        f32max, -f32max, f32max * (1 + 2**-25), 1e39, -1e39,  # max finite, overflow to ±inf
        float("inf"), float("-inf"), float("nan"),
        16777217.0, 16777219.0, 1e300, -123456.789,  # ties to even, rounding
        2.0**-149, 2.0**-150, 2.0**-150 * 1.5,
    ], dtype=np.float64)


def save_reproducibly(tensors, path, metadata):
    """save_file, but byte-identical across runs.

    safetensors keeps __metadata__ in a Rust HashMap, so its key order changes from call to
    call; re-serialise until it comes out sorted (the bytes are still the library's own).
    """
    for _ in range(10_000):
        blob = save(tensors, metadata=metadata)
        (n,) = struct.unpack("<Q", blob[:8])
        if list(json.loads(blob[8:8 + n])["__metadata__"]) == sorted(metadata):
            path.write_bytes(blob)
            return
    raise RuntimeError("safetensors never produced sorted metadata keys")


def main():
    OUT.mkdir(parents=True, exist_ok=True)

    f32 = f32_values()
    f16 = from_bits(f16_bits(), np.uint16, np.float16)
    bf16_int = np.array(bf16_bits(), dtype=np.uint16).view(np.int16)
    bf16 = torch.from_numpy(bf16_int.copy()).view(torch.bfloat16)
    f64 = f64_values()
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        f16_expected = f16.astype(np.float32)
        f64_expected = f64.astype(np.float32)

    written = {
        "conv.weight": torch.from_numpy(f32.copy()),
        "half": torch.from_numpy(f16.copy()),
        "brain": bf16,
        "double": torch.from_numpy(f64.copy()).reshape(5, 5),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "layer.bn.num_batches_tracked": torch.tensor(12345, dtype=torch.int64),
        "ints.i64": torch.tensor([-(2**63), 2**63 - 1, -1, 0, 7], dtype=torch.int64),
        "ints.i32": torch.tensor([[-(2**31), 2**31 - 1], [-1, 42]], dtype=torch.int32),
        "ints.i16": torch.tensor([-(2**15), 2**15 - 1, -3], dtype=torch.int16),
        "ints.i8": torch.tensor([-128, 127, -1, 0], dtype=torch.int8),
        "ints.u8": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "ints.bool": torch.tensor([True, False, True], dtype=torch.bool),
    }
    expected = {
        "conv.weight": torch.from_numpy(f32.copy()),
        "half": torch.from_numpy(f16_expected.copy()),
        "brain": bf16.float(),
        "double": torch.from_numpy(f64_expected.copy()).reshape(5, 5),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }
    save_reproducibly(written, OUT / "python_written.safetensors", METADATA)
    save_file(expected, str(OUT / "python_expected.safetensors"))
    for name in ("python_written.safetensors", "python_expected.safetensors"):
        print(f"wrote {OUT / name} ({(OUT / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
