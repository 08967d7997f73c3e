#!/usr/bin/env python3
"""Which levers make a converted CIFAR-10 ResNet-20 accurate at 1W/1A: an ablation.

Every variant starts from the same pretrained ResNet-20 and the same base
recipe, changes one thing (or combines several), trains for the same number
of images, and is measured on all 10,000 test images: right after
conversion, after calibration (activation thresholds and BatchNorm
re-estimation), and after training. It runs the product's trainer
(:func:`irconvert.train.run.fit`), so the numbers are the product's.

    python benchmarks/cifar10_ablation.py --data ../shared/data/cifar10 \\
        --weights ../shared/data/weights/resnet20-12fca82f.th \\
        --train-subset 10000 --epochs 4 --out results/ablation-short

``--train-subset N`` trains on the first N/10 images of every class (short
runs to choose); without it the whole training split is used. ``--variants``
picks variants by name (default: all). Results: one JSON line per variant
in ``OUT.jsonl`` (appended as each finishes, so a long sweep can be
stopped and continued with ``--skip-done``) and a table in ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from irconvert.atomic import write_text
from irconvert.config.recipe_file import apply_overrides, load_recipe, parse_sets
from irconvert.data.datasets import DataBundle, open_data
from irconvert.data.loaders import images_as_uint8
from irconvert.errors import ConfigError
from irconvert.io import load_model
from irconvert.train.run import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "recipes" / "cifar10-resnet20-finetune-1w1a.yaml"

SGD = {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4}
ADAM = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}
LOGITS = {"kind": "logits", "alpha": 0.7, "temperature": 2.0}
DIST = {"kind": "distributional"}

# name -> overrides of the base recipe (dotted keys, as --set takes them)
VARIANTS: dict[str, dict[str, Any]] = {
    # the recipe as it was before this ablation: SGD, logit KD, Hardtanh, no thresholds
    "baseline": {"optimizer": SGD, "distill": LOGITS, "binarize.act_threshold": False,
                 "binarize.block_act": "hardtanh", "amp": "bf16"},
    "adam": {"optimizer": ADAM, "distill": LOGITS, "binarize.act_threshold": False,
             "binarize.block_act": "hardtanh", "amp": "bf16"},
    "adam-lr3e-3": {"optimizer": {**ADAM, "lr": 3e-3}, "distill": LOGITS,
                    "binarize.act_threshold": False, "binarize.block_act": "hardtanh",
                    "amp": "bf16"},
    "sgd-lr0.05": {"optimizer": {**SGD, "lr": 0.05}, "distill": LOGITS,
                   "binarize.act_threshold": False, "binarize.block_act": "hardtanh",
                   "amp": "bf16"},
    "distributional": {"optimizer": SGD, "distill": DIST, "binarize.act_threshold": False,
                       "binarize.block_act": "hardtanh", "amp": "bf16"},
    "no-distill": {"optimizer": SGD, "distill": None, "binarize.act_threshold": False,
                   "binarize.block_act": "hardtanh", "amp": "bf16"},
    "features": {"optimizer": SGD, "distill": {**LOGITS, "features": 1.0},
                 "binarize.act_threshold": False, "binarize.block_act": "hardtanh",
                 "amp": "bf16"},
    "thresholds": {"optimizer": SGD, "distill": LOGITS, "binarize.act_threshold": True,
                   "binarize.block_act": "hardtanh", "amp": "bf16"},
    "rprelu": {"optimizer": SGD, "distill": LOGITS, "binarize.act_threshold": False,
               "binarize.block_act": "rprelu", "amp": "bf16"},
    "ede-per-epoch": {"optimizer": SGD, "distill": LOGITS, "binarize.act_threshold": False,
                      "binarize.block_act": "hardtanh", "amp": "bf16", "ede.per": "epoch"},
    "fp32": {"optimizer": SGD, "distill": LOGITS, "binarize.act_threshold": False,
             "binarize.block_act": "hardtanh", "amp": "none"},
    "staged": {"optimizer": SGD, "distill": LOGITS, "binarize.act_threshold": False,
               "binarize.block_act": "hardtanh", "amp": "bf16",
               "stages": "half"},  # expanded below: activations first, then both
    "combined": {"optimizer": ADAM, "distill": DIST, "binarize.act_threshold": True,
                 "binarize.block_act": "rprelu", "amp": "bf16"},
    # the shipped recipe's levers (lr 2e-3 as shipped)
    "adam-rprelu": {"optimizer": {**ADAM, "lr": 2e-3}, "distill": LOGITS,
                    "binarize.act_threshold": False, "binarize.block_act": "rprelu",
                    "amp": "bf16"},
    "adam-rprelu-thresholds": {"optimizer": {**ADAM, "lr": 2e-3}, "distill": LOGITS,
                               "binarize.act_threshold": True, "binarize.block_act": "rprelu",
                               "amp": "bf16"},
    "combined-sgd": {"optimizer": SGD, "distill": DIST, "binarize.act_threshold": True,
                     "binarize.block_act": "rprelu", "amp": "bf16"},
    "combined-staged": {"optimizer": ADAM, "distill": DIST, "binarize.act_threshold": True,
                        "binarize.block_act": "rprelu", "amp": "bf16", "stages": "half"},
}


class ArraySplit(Dataset[Any]):
    """uint8 images held in memory (``data`` N,H,W,C and ``targets``, CIFAR style)."""

    def __init__(self, data: np.ndarray, targets: list[int]) -> None:
        self.data, self.targets = data, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.data[i]), self.targets[i]


def load_arrays(root: str, cache: Path | None) -> dict[str, Any]:
    """Decode the ImageFolder tree once (optionally cached as .npz: not data in the repo)."""
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files} | {"classes": list(z["classes"])}
    bundle = open_data(f"imagefolder:{root}", split="test")
    assert bundle.train is not None
    out: dict[str, Any] = {"classes": bundle.classes}
    for split, ds in (("train", bundle.train), ("test", bundle.val)):
        x, y = images_as_uint8(ds)
        out[f"{split}_x"], out[f"{split}_y"] = x.permute(0, 2, 3, 1).numpy(), y.numpy()
    if cache is not None:
        np.savez(cache, **{k: v for k, v in out.items() if k != "classes"},
                 classes=np.array(out["classes"]))
    return out


def make_bundle(arrays: dict[str, Any], subset: int | None) -> DataBundle:
    x, y = arrays["train_x"], arrays["train_y"]
    if subset:
        per_class = subset // len(arrays["classes"])
        keep = np.concatenate([np.flatnonzero(y == c)[:per_class]
                               for c in range(len(arrays["classes"]))])
        x, y = x[keep], y[keep]
    return DataBundle(train=ArraySplit(x, y.tolist()),
                      val=ArraySplit(arrays["test_x"], arrays["test_y"].tolist()),
                      classes=list(arrays["classes"]), name="cifar10", val_split="test")


def variant_recipe(name: str, epochs: int, extra: dict[str, Any]) -> Any:
    overrides = dict(VARIANTS[name])
    overrides.update({"epochs": epochs, "data.gpu_cache": True, "workers": 0,
                      "compile": True, "channels_last": True, "device": "cpu"})
    overrides.update(extra)
    stages = overrides.pop("stages", None)
    # as given: distill None switches distillation off, and the budget of images
    # seen is fixed (no time budget: every variant trains its epochs)
    recipe = apply_overrides(load_recipe(BASE), {}, {"budget_minutes": None, **overrides})
    if stages == "half":
        first = max(epochs // 2, 1)
        recipe = type(recipe).from_dict({**recipe.to_dict(), "stages": [
            {"name": "activations", "epochs": first, "binarize": "activations"},
            {"name": "both", "epochs": max(epochs - first, 1), "binarize": "both"}]})
    return recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", required=True, help="CIFAR-10 ImageFolder root")
    parser.add_argument("--weights", required=True, help="pretrained CIFAR ResNet-20")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-subset", type=int, help="images per run's training set")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="KEY=VALUE override for every variant, as binarize --set")
    parser.add_argument("--cache", type=Path, help="decoded-images .npz (made if missing)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "ablation")
    parser.add_argument("--out", type=Path, required=True, help="OUT.jsonl and OUT.md")
    parser.add_argument("--skip-done", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    try:
        extra = parse_sets(args.sets)
    except ConfigError as exc:
        parser.error(str(exc))
    arrays = load_arrays(args.data, args.cache)
    bundle = make_bundle(arrays, args.train_subset)
    out_jsonl = args.out.with_suffix(".jsonl")
    out_jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.skip_done and out_jsonl.is_file():
        done = {json.loads(line)["variant"] for line in out_jsonl.read_text().splitlines()}
    for name in args.variants:
        if name in done:
            continue
        recipe = variant_recipe(name, args.epochs, extra)
        model = load_model(args.weights).model
        run_dir = args.run_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        start = time.perf_counter()
        result = fit(model, bundle, recipe, run_dir, quiet=True, evaluate_start=True)
        wall = time.perf_counter() - start
        row = {"variant": name, "overrides": VARIANTS[name] | extra,
               "train_images": len(bundle.train), "epochs": result.epochs,  # type: ignore
               "images_seen": result.epochs * len(bundle.train),  # type: ignore[arg-type]
               "fp_top1": result.fp_top1, "converted_top1": result.start.get("converted"),
               "calibrated_top1": result.start.get("calibrated"),
               "final_top1": result.final.get("val_top1"), "best_top1": result.best_top1,
               "train_images_per_s": round(float(np.mean(
                   [r["images_per_s"] for r in result.history])), 1),
               "wall_s": round(wall, 1), "machine": machine(), "torch": torch.__version__,
               "run_dir": str(run_dir)}
        print(json.dumps(row), flush=True)
        with out_jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    lines = ["| variant | images seen | converted | calibrated | final top-1 | img/s | wall |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['images_seen']:,} | {r['converted_top1']:.2f} | "
                     f"{r['calibrated_top1']:.2f} | {r['final_top1']:.2f} | "
                     f"{r['train_images_per_s']:.0f} | {r['wall_s'] / 60:.1f} min |")
    lines.append(f"\n{rows[-1]['machine']}, torch {rows[-1]['torch']}; command: python "
                 + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
