#!/usr/bin/env python3
"""PyTorch twin of `dynbench train --model resnetN --dataset cifar10`, to compare training curves.

Same network (scripts/make_fixtures.py: projection shortcuts, kaiming-normal fan-out convs),
same data (CIFAR-10 binary files, per-channel normalisation, random crop with zero padding in
pixel space + horizontal flip, reshuffled every epoch, last partial batch dropped), same
optimiser (SGD, Nesterov, weight decay on every parameter), same per-step schedule (linear
warm-up from 0.01 over --warmup-epochs, then cosine to 0 over the rest of --epochs) and label
smoothing. --stop-after E runs only the first E epochs of that schedule: a cheap check that
both libraries descend alike. Random streams differ, so compare curves, not bits.

    .venv-peers/bin/python scripts/torch_cifar_train.py --data DATA --epochs 39 --val 0 \
        --label-smoothing 0.1 --test-every 5 --threads 2 --channels-last
"""
import argparse, math, os, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import resnet_cifar  # noqa: E402

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def load(dirname, names):
    raw = b"".join(open(os.path.join(dirname, n), "rb").read() for n in names)
    a = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
    return a[:, 1:].reshape(-1, 3, 32, 32).copy(), a[:, 0].astype(np.int64)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--epochs", type=int, default=39)
    p.add_argument("--stop-after", type=int, default=None)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--val", type=int, default=5000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--test-every", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    x, y = load(a.data, [f"data_batch_{i}.bin" for i in range(1, 6)])
    xt, yt = load(a.data, ["test_batch.bin"])
    perm = rng.permutation(len(x))
    val_idx, train_idx = np.sort(perm[:a.val]), np.sort(perm[a.val:])
    xv, yv, x, y = x[val_idx], y[val_idx], x[train_idx], y[train_idx]

    def normalise(u8):
        return torch.from_numpy((u8.astype(np.float32) / 255 - MEAN[:, None, None]) / STD[:, None, None])

    # Zero-pad in pixel space (black), normalise once; crops are slices of the padded tensor.
    padded = normalise(np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4))))
    xv_t, xt_t = normalise(xv), normalise(xt)

    model = resnet_cifar(a.depth)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=a.weight_decay)
    steps = len(x) // a.batch
    total, warm = a.epochs * steps, round(a.warmup_epochs * steps)

    def factor(t):
        if t < warm:
            return 0.01 + 0.99 * t / warm
        return (1 + math.cos(math.pi * (t - warm) / max(total - warm, 1))) / 2

    def evaluate(xs, ys):
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xs), 500):
                correct += (model(xs[i:i + 500].contiguous(memory_format=fmt)).argmax(1) == torch.from_numpy(ys[i:i + 500])).sum().item()
        model.train()
        return correct / len(xs)

    t0 = time.time()
    for epoch in range(a.stop_after or a.epochs):
        order = rng.permutation(len(x))
        loss_sum, correct, seen, e0 = 0.0, 0, 0, time.time()
        for k in range(steps):
            for g in opt.param_groups:
                g["lr"] = a.lr * factor(epoch * steps + k)
            idx = order[k * a.batch:(k + 1) * a.batch]
            dy, dx = rng.integers(0, 9, len(idx)), rng.integers(0, 9, len(idx))
            flip = rng.integers(0, 2, len(idx)).astype(bool)
            imgs = torch.stack([padded[i, :, oy:oy + 32, ox:ox + 32] for i, oy, ox in zip(idx, dy, dx)])
            if flip.any():
                imgs[flip] = imgs[flip].flip(3)
            labels = torch.from_numpy(y[idx])
            out = model(imgs.contiguous(memory_format=fmt))
            loss = F.cross_entropy(out, labels, label_smoothing=a.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == labels).sum().item()
            seen += len(idx)
        val = evaluate(xv_t, yv) if a.val > 0 else float("nan")
        last = epoch + 1 == (a.stop_after or a.epochs)
        test = evaluate(xt_t, yt) if (epoch + 1) % a.test_every == 0 or last else float("nan")
        print(f"epoch {epoch + 1:3d}  {time.time() - t0:8.1f} s  loss {loss_sum / seen:.4f}  train {correct / seen:.4f}  "
              f"val {val:.4f}  test {test:.4f}  {seen / (time.time() - e0):.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
