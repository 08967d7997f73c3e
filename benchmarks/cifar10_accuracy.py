"""CIFAR-10 top-1 of the pretrained ResNet-20 after IR-Net conversion and fine-tuning.

Runs the product itself -- ``irconvert.train.binarize_and_train`` with a
shipped recipe, exactly what ``irconvert binarize`` does -- and reports top-1
on the 10,000 test images with the recipe, the training length, wall time
and machine. Full protocol: the recipe as shipped (as many epochs as fit
its ``budget_minutes`` on this machine, up to its ``epochs``). Reduced
protocol: ``--steps N`` (the schedule then spans N steps), stated in the result.

    python benchmarks/cifar10_accuracy.py --mode 1w32a --steps 800 \\
        --data ../shared/data/cifar10 \\
        --weights ../shared/data/weights/resnet20-12fca82f.th --out results/r20-1w32a
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from irconvert.atomic import write_text
from irconvert.config.recipe_file import apply_overrides, load_recipe, parse_sets
from irconvert.errors import ConfigError
from irconvert.train.run import binarize_and_train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"1w1a": REPO / "recipes" / "cifar10-resnet20-finetune-1w1a.yaml",
           "1w32a": REPO / "recipes" / "cifar10-resnet20-finetune-1w32a.yaml"}
PUBLISHED = {"1w1a": 86.5, "1w32a": 90.8}  # IR-Net, from scratch, 400 epochs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", required=True, help="CIFAR-10 ImageFolder root (train/, test/)")
    parser.add_argument("--weights", required=True, help="pretrained CIFAR ResNet checkpoint")
    parser.add_argument("--mode", choices=sorted(RECIPES), default="1w1a")
    parser.add_argument("--recipe", type=Path, help="default: the mode's fine-tune recipe")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--steps", type=int, help="override: train this many steps (reduced)")
    parser.add_argument("--device", help="override the recipe's device")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="KEY=VALUE recipe override, as binarize --set; repeatable")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "bench")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe_path = args.recipe or RECIPES[args.mode]
    overrides: dict[str, Any] = {"epochs": args.epochs, "steps": args.steps,
                                 "device": args.device, "data.gpu_cache": True, "workers": 0}
    try:
        sets = parse_sets(args.sets)
        recipe = apply_overrides(load_recipe(recipe_path), overrides, sets)
    except ConfigError as exc:
        parser.error(str(exc))
    run_dir = args.run_dir / f"{args.mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    result = binarize_and_train(args.weights, f"imagefolder:{args.data}", recipe, run_dir,
                                quiet=True, evaluate_start=True)
    wall = time.perf_counter() - start
    final = result.final
    row = {
        "mode": args.mode, "recipe": str(recipe_path.relative_to(REPO) if recipe_path.is_absolute()
                                         and REPO in recipe_path.parents else recipe_path),
        "overrides": {k: v for k, v in overrides.items() if v is not None} | sets,
        "protocol": "full recipe" if args.steps is None and args.epochs is None else "reduced",
        "epochs": result.epochs, "steps": recipe.steps, "budget_minutes": recipe.budget_minutes,
        "epochs_ceiling": recipe.epochs,
        "batch_size": recipe.batch_size,
        "fp_top1": result.fp_top1, "converted_top1": result.start.get("converted"),
        "calibrated_top1": result.start.get("calibrated"), "best_top1": result.best_top1,
        "final_top1": final.get("val_top1"), "final_top5": final.get("val_top5"),
        "published_top1": PUBLISHED[args.mode], "wall_s": round(wall, 1),
        "machine": machine(torch.device("cuda") if torch.cuda.is_available()
                           and recipe.device != "cpu" else None),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "run_dir": str(run_dir),
        "curve": [[r["epoch"] + 1, r.get("val_top1")] for r in result.history],
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
    }
    md = (f"| ResNet-20 {args.mode.upper().replace('W', 'W/')} | {row['protocol']}: "
          f"{row['epochs']} epoch(s){'' if recipe.steps is None else f', {recipe.steps} steps'} "
          f"| {row['fp_top1']:.2f} | {row['final_top1']:.2f} | {row['best_top1']:.2f} "
          f"| {row['published_top1']} | {wall / 60:.1f} min | {row['machine']} |")
    print(json.dumps(row, indent=2))
    print(md)
    if args.out:
        write_text(args.out.with_suffix(".json"), json.dumps(row, indent=2) + "\n")
        write_text(args.out.with_suffix(".md"), md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
