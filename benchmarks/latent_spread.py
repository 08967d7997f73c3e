#!/usr/bin/env python3
"""How far a run's latent weights have grown: each binarized filter's spread, start against now.

Libra-PB standardizes every filter before its sign, so a filter's standard
deviation never reaches the forward pass, but with Adam it is the inverse of
the filter's effective learning rate (``docs/concepts.md``, "The latent
weights' scale"). For every binarized convolution of a run, the mean over
its filters of the standard deviation in the full-precision weights the run
started from and in its ``last.pt``, and the latent weights' peak rate
(``--lr``; by default the run's recipe's ``optimizer.lr`` times
``optimizer.latent_lr_scale``) as a share of each:

    python benchmarks/latent_spread.py results/long-run/cifar10-r20-1w1a-160ep/last.pt \\
        --start ../shared/data/weights/resnet20-12fca82f.th
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from irconvert.errors import IRConvertError
from irconvert.io.checkpoint_file import load_state_dict_file, read_checkpoint


def filter_std(weight: torch.Tensor) -> float:
    """Mean over filters (dim 0) of each filter's standard deviation."""
    return float(weight.flatten(1).std(1).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run's last.pt or best.pt")
    parser.add_argument("--start", type=Path, required=True,
                        help="the float checkpoint it began from")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak lr of the latent weights (default: from the run's recipe)")
    args = parser.parse_args(argv)

    try:
        ckpt = read_checkpoint(args.run)
        start, _ = load_state_dict_file(args.start)
    except IRConvertError as exc:
        parser.error(str(exc))
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        parser.error(f"{args.run} is not a run checkpoint (best.pt / last.pt of irconvert)")
    if not isinstance(start, dict):
        parser.error(f"{args.start} holds no state_dict to compare against")
    trained: dict[str, torch.Tensor] = ckpt.get("train_model", ckpt["model"])
    lr = args.lr
    if lr is None:
        opt = ckpt.get("recipe", {}).get("optimizer", {})
        if "lr" not in opt:
            parser.error(f"{args.run} names no recipe lr: give --lr")
        lr = float(opt["lr"]) * float(opt.get("latent_lr_scale", 1.0))
    binarized = [k[: -len(".ede_t")] for k in trained if k.endswith(".ede_t")]
    print(f"{args.run} (epoch {ckpt.get('epoch')}) against {args.start}, "
          f"latent weights' peak lr {lr:g}")
    print("| layer | filter std at start | now | growth | lr / std at start | lr / std now |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in binarized:
        key = f"{name}.weight"
        if key not in start:
            continue
        s0, s1 = filter_std(start[key].float()), filter_std(trained[key].float())
        print(f"| {name} | {s0:.3f} | {s1:.3f} | {s1 / s0:.1f}x "
              f"| {100 * lr / s0:.2f}% | {100 * lr / s1:.2f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
