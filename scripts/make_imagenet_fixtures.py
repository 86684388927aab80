#!/usr/bin/env python3
"""Parity fixtures for the ImageNet ResNets (torchvision's ResNet-18 and ResNet-50).

Writes Tests/BackbonesTests/Fixtures/models/resnet{18,50}_imagenet_hash_io.safetensors: the
float64 eval-mode logits [2, 1000] of a torchvision-equivalent twin whose every state_dict entry
comes from the ``hash_uniform`` rule of scripts/make_fixtures.py, on the input
hash_uniform([2, 3, 224, 224], fnv1a64("imagenet-input"), -1, 1). Neither weights (25.6 M for
ResNet-50) nor input are stored: the Swift test regenerates both. The metadata lists the
twin's state_dict keys (num_batches_tracked dropped), which the Swift model must match.

The twin is written out here with torchvision's module names (torchvision is not installed in
the peers environment); ResNet v1.5: the stride of a bottleneck sits on its 3x3 convolution.

    .venv-peers/bin/python scripts/make_imagenet_fixtures.py   (environment: ../shared/peers/setup.sh)
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn as nn

from make_fixtures import MODELS_DIR, _save, eval_logits_f64, fnv1a64, hash_state_dict, hash_uniform


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__()
        out = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for b in range(n):
                blocks.append(block(cin, width, 2 if (i > 0 and b == 0) else 1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def main() -> None:
    x = torch.from_numpy(hash_uniform([2, 3, 224, 224], fnv1a64("imagenet-input"), -1, 1).copy())
    for name, model, params in [("resnet18_imagenet", ResNet(BasicBlock, (2, 2, 2, 2)), 11_689_512),
                                ("resnet50_imagenet", ResNet(Bottleneck, (3, 4, 6, 3)), 25_557_032)]:
        count = sum(p.numel() for p in model.parameters())
        assert count == params, (name, count)           # torchvision's parameter counts
        model.load_state_dict(hash_state_dict(model), strict=True)
        keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
        logits = eval_logits_f64(model, x)
        path = os.path.join(MODELS_DIR, f"{name.replace('_imagenet', '')}_imagenet_hash_io.safetensors")
        _save(path, {"logits": logits}, {"model": name, "input": "hash_uniform([2,3,224,224], fnv1a64('imagenet-input'), -1, 1)",
                                          "weights": "hash_uniform rule, see scripts/make_fixtures.py",
                                          "keys": json.dumps(keys)})
        print(name, count, "parameters;", len(keys), "keys; logits[0, :4]", logits[0, :4].tolist(), "→", path)


if __name__ == "__main__":
    main()
