"""What OpenVINO's default precision hint costs a binary model in agreement, on real data.

OpenVINO's CPU plugin runs float layers in bf16 by default where the CPU has
AMX or AVX512_BF16; irconvert compiles with ``INFERENCE_PRECISION_HINT=f32``,
which reproduces PyTorch. This exports a packed ``.irc`` to a static-batch
OpenVINO IR (``export --format openvino --batch N``), runs the whole eval
split with both hints, and reports each one's top-1, how many predictions
differ, and the time per batch.

Usage:
    python benchmarks/openvino_hint.py results/cifar10-resnet20-1w1a.irc \\
        --data imagefolder:../shared/data/cifar10 [--batch 100] [--out results/openvino-hint.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_flags, machine

from irconvert.atomic import write_text
from irconvert.config import DataConfig
from irconvert.data.datasets import open_data
from irconvert.data.loaders import AugmentedDataset, build_transform, make_loader
from irconvert.export.api import export_checkpoint
from irconvert.export.runtime import load_predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("irc", type=Path, help="a packed .irc model")
    parser.add_argument("--data", required=True, help="e.g. imagefolder:../shared/data/cifar10")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="irconvert-hint-") as tmp:
        xml = Path(tmp) / "ov"
        export_checkpoint(args.irc, "openvino", xml, batch=args.batch)
        engines = {hint: load_predictor(xml, threads=args.threads, precision=hint)
                   for hint in ("f32", "default")}
        first = engines["f32"]
        norm = first.normalization
        if norm is None:
            sys.exit(f"error: {args.irc} records no normalisation")
        bundle = open_data(args.data, split="auto", channels=len(norm["mean"]))
        recorded = {k: v for k, v in (first.preprocessing or {}).items()
                    if k in ("eval_resize", "eval_crop") and v}
        tf = build_transform(DataConfig.from_dict(recorded, "data"), tuple(norm["mean"]),
                             tuple(norm["std"]), train=False)
        loader = make_loader(AugmentedDataset(bundle.val, tf), batch_size=args.batch,
                             train=False, seed=0, workers=0, pin_memory=False)
        preds: dict[str, list[np.ndarray]] = {h: [] for h in engines}
        seconds = dict.fromkeys(engines, 0.0)
        labels = []
        for x, y in loader:
            batch = x.numpy()
            if len(batch) < args.batch:  # the static IR takes full batches; pad the last
                batch = np.concatenate([batch, np.zeros((args.batch - len(batch),
                                                         *batch.shape[1:]), batch.dtype)])
            for hint, predict in engines.items():
                t0 = time.perf_counter()
                out = predict(batch)[: len(y)]
                seconds[hint] += time.perf_counter() - t0
                preds[hint].append(out.argmax(1))
            labels.append(y.numpy())
    truth = np.concatenate(labels)
    top = {h: np.concatenate(p) for h, p in preds.items()}
    changed = int((top["f32"] != top["default"]).sum())
    n = len(truth)
    lines = [
        f"## OpenVINO precision hint: {args.irc.name}",
        "",
        f"Machine: {machine()}; flags: {', '.join(cpu_flags()) or 'unknown'}; "
        f"{args.threads} OpenVINO thread(s), batch {args.batch}, {n:,} images of "
        f"{bundle.name} ({bundle.val_split}). Command: `python benchmarks/openvino_hint.py "
        f"{args.irc} --data {args.data} --batch {args.batch}`",
        "",
        "| hint | top-1 | ms per batch |",
        "|---|---:|---:|",
    ]
    batches = -(-n // args.batch)
    for hint in engines:
        acc = 100 * float((top[hint] == truth).mean())
        lines.append(f"| {hint} | {acc:.2f}% | {1000 * seconds[hint] / batches:.2f} |")
    lines += ["", f"Predictions that differ between the hints: **{changed:,} of {n:,}** "
              f"({100 * changed / n:.2f}%)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
