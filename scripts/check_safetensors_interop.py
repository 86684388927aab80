#!/usr/bin/env python3
"""Checks that files written by DynamicNN's SafeTensors.write load in the official reader.

Runs the Swift test SafeTensorsTests/testWriteForPythonInterop with DYN_SAFETENSORS_OUT set,
then loads the file it wrote with safetensors.numpy.load_file and safe_open (metadata too),
checks the raw layout (8-byte aligned header, no unused bytes), and compares every tensor
bit-exactly against values recomputed here with the same formula as the Swift test.

    .venv-peers/bin/python scripts/check_safetensors_interop.py
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent

# Must match SafeTensorsTests.testWriteForPythonInterop.
SHAPES = {
    "a.weight": (3, 4),
    "b.bias": (5,),
    "scalar": (),
    "empty": (2, 0, 3),
    "rank5": (1, 2, 1, 3, 2),
    "big": (64, 33),
}
METADATA = {
    "format": "pt",
    "producer": "DynamicNN SafeTensorsTests",
    "note": 'quote " backslash \\ newline \n tab \t unicode é ✓ 🚀',
    "controls": "cr\r bs\b ff\f \x01 \x1f del\x7f combining e\u0301",
}


def expected_tensors():
    out = {}
    for name, shape in SHAPES.items():
        n = int(np.prod(shape, dtype=np.int64))
        out[name] = (np.arange(n, dtype=np.float64) * 0.25 - 3).astype(np.float32).reshape(shape)
    f32 = np.finfo(np.float32)
    out["specials"] = np.array(
        [np.nan, np.inf, -np.inf, -0.0, f32.smallest_subnormal, f32.max, np.float32(1e-3)], dtype=np.float32)
    return out


def same_bits(a, b):
    if a.shape != b.shape:
        return False
    a32, b32 = np.ascontiguousarray(a).view(np.uint32), np.ascontiguousarray(b).view(np.uint32)
    return bool(np.all(a32 == b32))  # NaN included: the writer must keep bits as they are


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "swift_written.safetensors"
        env = dict(os.environ, DYN_SAFETENSORS_OUT=str(out))
        cmd = ["swift", "test", "--scratch-path", ".build-st",
               "--filter", "SafeTensorsTests/testWriteForPythonInterop"]
        print("$ DYN_SAFETENSORS_OUT=" + str(out) + " " + " ".join(cmd), flush=True)
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        for line in (run.stdout + run.stderr).splitlines():
            if "Executed" in line or "error" in line or "SafeTensorsTests:" in line:
                print("  " + line.strip())
        if run.returncode != 0:
            print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
            sys.exit(f"swift test failed with exit code {run.returncode}")
        if not out.exists():
            sys.exit(f"swift test passed but wrote no file at {out} (filter matched nothing?)")

        raw = out.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        failures = []
        if n % 8:
            failures.append(f"header length {n} is not a multiple of 8")
        if not raw[8:9] == b"{" or not raw[8:8 + n].rstrip(b" ").endswith(b"}"):
            failures.append("header is not a '{...}' object padded with trailing spaces")
        spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
        cursor = 0
        for begin, end in spans:
            if begin != cursor:
                failures.append(f"data not contiguous at {begin} (expected {cursor})")
            cursor = end
        if 8 + n + cursor != len(raw):
            failures.append(f"file is {len(raw)} bytes, header + data account for {8 + n + cursor}")
        if any(v["dtype"] != "F32" for k, v in header.items() if k != "__metadata__"):
            failures.append("non-F32 dtype written")

        loaded = load_file(str(out))
        with safe_open(str(out), framework="np") as f:
            metadata = f.metadata()
            keys = sorted(f.keys())
        expected = expected_tensors()
        if metadata != METADATA:
            failures.append(f"metadata {metadata!r} != {METADATA!r}")
        if keys != sorted(expected) or sorted(loaded) != sorted(expected):
            failures.append(f"tensor names {keys} != {sorted(expected)}")
        for name, want in expected.items():
            got = loaded.get(name)
            if got is None:
                continue
            if got.dtype != np.float32 or not same_bits(got, want):
                failures.append(f"{name}: got {got.dtype} {got.shape} {got.ravel()[:8]}, "
                                f"expected {want.shape} {want.ravel()[:8]}")

        if failures:
            print("FAIL")
            for f in failures:
                print("  " + f)
            sys.exit(1)
        print(f"OK: {len(raw)} bytes, header {n} bytes, {len(loaded)} tensors "
              f"({', '.join(f'{k}{list(v.shape)}' for k, v in sorted(loaded.items()))}), "
              f"metadata {len(metadata)} keys, all bit-exact")


if __name__ == "__main__":
    main()
