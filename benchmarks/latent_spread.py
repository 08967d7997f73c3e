#!/usr/bin/env python3
"""How far a run's latent weights have grown: each binarized filter's spread, start against now.

Libra-PB standardizes every filter before its sign, so a filter's standard
deviation never reaches the forward pass, but with Adam it is the inverse of
the filter's effective learning rate (``docs/concepts.md``, "The latent
weights' scale"). For every binarized convolution of a run, the mean over
its filters of the standard deviation in the full-precision weights the run
started from and in its ``last.pt``, and ``lr`` as a share of each:

    python benchmarks/latent_spread.py results/long-run/cifar10-r20-1w1a-160ep/last.pt \\
        --start ../shared/data/weights/resnet20-12fca82f.th --lr 3e-3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from irconvert.io.checkpoint_file import load_state_dict_file


def filter_std(weight: torch.Tensor) -> float:
    """Mean over filters (dim 0) of each filter's standard deviation."""
    return float(weight.flatten(1).std(1).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run's last.pt or best.pt")
    parser.add_argument("--start", type=Path, required=True,
                        help="the float checkpoint it began from")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak lr of the run's recipe")
    args = parser.parse_args(argv)

    ckpt = torch.load(args.run, map_location="cpu", weights_only=True)
    trained: dict[str, torch.Tensor] = ckpt.get("train_model", ckpt["model"])
    start, _ = load_state_dict_file(args.start)
    assert isinstance(start, dict)
    binarized = [k[: -len(".ede_t")] for k in trained if k.endswith(".ede_t")]
    print(f"{args.run} (epoch {ckpt.get('epoch')}) against {args.start}")
    print("| layer | filter std at start | now | growth | lr / std at start | lr / std now |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in binarized:
        key = f"{name}.weight"
        if key not in start:
            continue
        s0, s1 = filter_std(start[key].float()), filter_std(trained[key].float())
        print(f"| {name} | {s0:.3f} | {s1:.3f} | {s1 / s0:.1f}x "
              f"| {100 * args.lr / s0:.2f}% | {100 * args.lr / s1:.2f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
