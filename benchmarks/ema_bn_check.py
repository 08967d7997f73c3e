#!/usr/bin/env python3
"""How much of a weight average's score its BatchNorm statistics cost.

An ``ema`` run averages BatchNorm running statistics along with the
weights, so the average's statistics describe the weights it passed
through, not its own. This re-estimates them (``train/bn.py``, as the
trainer does after conversion) on training batches, for the average
(``model`` of a run's ``last.pt``) and for the trained weights
(``train_model``), and evaluates each in fp32 on the test split:

    python benchmarks/ema_bn_check.py runs/levers/ema/1w1a-*/last.pt \\
        --data ../shared/data/cifar10 --batches 50

Training batches: random crop (padding 4) and flip, the run's own mean/std,
batch 128, shuffled with a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from irconvert.checkpoint import model_from_checkpoint
from irconvert.evaluate import evaluate_any
from irconvert.train.bn import recalibrate_bn


def main(argv: list[str] | None = None) -> int:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="an ema run's last.pt")
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 ImageFolder root")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = torch.load(args.checkpoint, weights_only=True)
    if "train_model" not in ckpt:
        raise SystemExit(f"{args.checkpoint}: no train_model: not a run with ema on")
    data = ckpt.get("recipe", {}).get("data", {})
    mean, std = data.get("mean", [0.485, 0.456, 0.406]), data.get("std", [0.229, 0.224, 0.225])
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                           T.ToTensor(), T.Normalize(mean, std)])
    train = ImageFolder(str(args.data / "train"), transform)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, name in (("model", "average"), ("train_model", "trained weights")):
            for recal in (False, True):
                model = model_from_checkpoint({**ckpt, "model": ckpt[key]})
                if recal:
                    torch.manual_seed(0)
                    loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True)
                    recalibrate_bn(model, loader, args.batches)
                path = Path(tmp) / "m.pt"
                torch.save({**ckpt, "model": model.state_dict()}, path)
                top1 = evaluate_any(str(path), f"imagefolder:{args.data}")["top1"]
                label = f"{name}, {'statistics re-estimated' if recal else 'as saved'}"
                rows[label] = top1
                print(f"| {label} | {top1:.2f} |", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
