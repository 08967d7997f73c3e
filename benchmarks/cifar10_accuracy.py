#!/usr/bin/env python3
"""CIFAR-10 top-1 of the pretrained ResNet-20 after IR-Net conversion and fine-tuning.

Standalone on purpose (a compact loop over library pieces, not the trainer),
so the number does not move when the trainer changes:

1. load the pretrained full-precision CIFAR ResNet and measure its top-1;
2. ``irconvert.binarize_`` it (1W/1A: with the Bi-Real block transform);
3. fine-tune: SGD momentum 0.9, cosine decay to 0 per step, weight decay,
   RandomCrop(32, padding 4) + horizontal flip, EDE ``t``/``k`` set every step
   from :func:`irconvert.ede_schedule`; 1W/1A by default distils from the
   full-precision model (``DistillationLoss``, alpha 1);
4. report top-1 on the 10,000 test images (or ``--test-subset``).

The PNG tree is decoded once into a uint8 array (cached as ``.npy`` under
``--cache-dir``) and augmented on tensors: decoding 50,000 PNGs every epoch
would dominate a CPU run.

    python benchmarks/cifar10_accuracy.py --data ../shared/data/cifar10 \\
        --weights ../shared/data/weights/resnet20-12fca82f.th --act-bits 1 --epochs 30 \\
        --out results/cifar10-resnet20-1w1a

    # reduced CPU protocol (a smoke test: proves it runs, accuracy meaningless)
    python benchmarks/cifar10_accuracy.py ... --train-subset 256 --test-subset 256 --epochs 1
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import irconvert
from irconvert.models import cifar_resnet
from irconvert.train.distill import DistillationLoss

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics: what the pretrained weights were trained with
STD = (0.229, 0.224, 0.225)


def machine(device: torch.device) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} (host: {text})"
    return text


def load_split(root: Path, split: str, subset: int | None, seed: int,
               cache_dir: Path | None) -> tuple[Tensor, Tensor]:
    """``(images uint8 NHWC, labels int64)`` of ``root/split``, decoded once and cached."""
    tag = f"{split}-{'all' if subset is None else f'{subset}-s{seed}'}"
    if cache_dir is not None:
        xp, yp = cache_dir / f"cifar10-{tag}-x.npy", cache_dir / f"cifar10-{tag}-y.npy"
        if xp.exists() and yp.exists():
            return torch.from_numpy(np.load(xp)), torch.from_numpy(np.load(yp))
    from PIL import Image
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(root / split))
    samples = folder.samples
    if subset is not None and subset < len(samples):
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))
        samples = [samples[i] for i in order[:subset].tolist()]
    x = np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _ in samples])
    y = np.array([label for _, label in samples], dtype=np.int64)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(xp, x)
        np.save(yp, y)
    return torch.from_numpy(x), torch.from_numpy(y)


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """RandomCrop(32, padding=4) + RandomHorizontalFlip on a uint8 NHWC batch."""
    n, h, w, _ = x.shape
    padded = F.pad(x, (0, 0, 4, 4, 4, 4))  # zero (black) padding, as torchvision pads PIL images
    oy = torch.randint(0, 9, (n,), generator=gen)
    ox = torch.randint(0, 9, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]
    out = padded[torch.arange(n)[:, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(2)
    return out


def to_input(x: Tensor, device: torch.device) -> Tensor:
    """uint8 NHWC -> normalised float NCHW on ``device``."""
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch: int, device: torch.device) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        logits = model(to_input(x[i:i + batch], device))
        correct += int((logits.argmax(1).cpu() == y[i:i + batch]).sum())
    return 100.0 * correct / len(x)


def load_pretrained(weights: Path, depth: int) -> nn.Module:
    model = cifar_resnet(depth)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return model


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    x_train, y_train = load_split(args.data, "train", args.train_subset, args.seed, args.cache_dir)
    x_test, y_test = load_split(args.data, "test", args.test_subset, args.seed, args.cache_dir)
    load_s = time.perf_counter() - t0
    print(f"data: {len(x_train)} train / {len(x_test)} test images ({load_s:.1f} s)", flush=True)

    model = load_pretrained(args.weights, args.depth).to(device)
    fp_top1 = evaluate(model, x_test, y_test, args.eval_batch_size, device)
    print(f"full precision: top-1 {fp_top1:.2f}%", flush=True)

    alpha = args.distill_alpha if args.distill_alpha is not None else (
        1.0 if args.act_bits == 1 else 0.0)
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if alpha > 0 else None
    report = irconvert.binarize_(model, irconvert.BinarizeConfig(act_bits=args.act_bits),
                                 warn=False)
    print(f"binarized {report.binarized_layers} layers, {len(report.blocks)} blocks transformed;"
          f" warnings: {len(report.warnings)}", flush=True)
    loss_fn: nn.Module = (DistillationLoss(teacher, alpha=alpha, temperature=args.temperature)
                          if teacher is not None else nn.CrossEntropyLoss())

    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                          weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    train_s = 0.0
    step = 0
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x_train), generator=gen)
        seen, loss_sum = 0, 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            inputs = to_input(augment(x_train[idx], gen), device)
            targets = y_train[idx].to(device)
            t, k = irconvert.ede_schedule(step / steps_per_epoch, args.epochs,
                                          args.t_min, args.t_max)
            irconvert.set_ede(model, t, k)
            logits = model(inputs)
            loss = (loss_fn(inputs, logits, targets) if isinstance(loss_fn, DistillationLoss)
                    else loss_fn(logits, targets))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_s = time.perf_counter() - start
        train_s += epoch_s
        top1 = (evaluate(model, x_test, y_test, args.eval_batch_size, device)
                if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs else None)
        history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "top1": top1,
                        "seconds": epoch_s})
        shown = f"{top1:.2f}%" if top1 is not None else "-"
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.4f} top-1 {shown} "
              f"({epoch_s:.1f} s, {1000 * epoch_s / seen:.2f} ms/image)", flush=True)

    top1 = history[-1]["top1"] if history else evaluate(
        model, x_test, y_test, args.eval_batch_size, device)
    recipe = (f"SGD m0.9 lr {args.lr} cosine/step wd {args.weight_decay}, batch "
              f"{args.batch_size}, crop+flip, EDE t {args.t_min}->{args.t_max} per step"
              + (f", distill alpha {alpha} T {args.temperature}" if alpha > 0 else ""))
    return {
        "model": f"cifar_resnet{args.depth}", "weights": str(args.weights),
        "mode": f"1W/{args.act_bits}A", "epochs": args.epochs, "recipe": recipe,
        "train_images": len(x_train), "test_images": len(x_test),
        "fp_top1": fp_top1, "top1": top1, "history": history,
        "train_seconds": train_s, "wall_seconds": time.perf_counter() - t0,
        "ms_per_train_image": 1000 * train_s / max(len(x_train) * args.epochs, 1),
        "device": str(device), "machine": machine(device), "torch": torch.__version__,
        "blocks_transformed": len(report.blocks), "warnings": report.warnings,
    }


def markdown_row(r: dict[str, Any]) -> str:
    return (f"| {r['model']} | {r['mode']} | {r['epochs']} | {r['train_images']} | "
            f"{r['test_images']} | {r['fp_top1']:.2f} | {r['top1']:.2f} | "
            f"{r['wall_seconds'] / 60:.1f} min | {r['machine']} | {r['recipe']} |")


MD_HEADER = ("| model | mode | epochs | train images | test images | fp top-1 | top-1 | wall | "
             "machine | recipe |\n|---|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="CIFAR-10 ImageFolder root "
                   "(with train/ and test/)")
    p.add_argument("--weights", type=Path, required=True, help="pretrained CIFAR ResNet .th")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--act-bits", type=int, choices=(1, 32), default=1)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--t-min", type=float, default=0.1)
    p.add_argument("--t-max", type=float, default=10.0)
    p.add_argument("--distill-alpha", type=float, default=None,
                   help="distillation weight (default: 1 for 1W/1A, 0 for 1W/32A)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on N random training images (reduced CPU protocol)")
    p.add_argument("--test-subset", type=int, default=None, metavar="N")
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="keep decoded images here as .npy (decode once)")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print(f"top-1 {result['top1']:.2f}% ({result['mode']}, {result['epochs']} epochs, "
          f"{result['train_images']} train images) in {result['wall_seconds']:.0f} s; "
          f"{result['ms_per_train_image']:.2f} ms per training image; {result['machine']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        args.out.with_suffix(".md").write_text(f"{MD_HEADER}\n{markdown_row(result)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
