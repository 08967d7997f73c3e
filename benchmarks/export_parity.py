"""Exported files against the PyTorch model they came from, on real test images.

Exports a run checkpoint to ``.irc``, ONNX (float and packed weights) and
OpenVINO IR, runs every file and the PyTorch model on the same normalised
test images, and reports per format: top-1 agreement with PyTorch, the
number of images whose top-1 differs, top-1 accuracy, and the max |logit
difference|. Binary networks are sensitive to rounding: a pre-activation that
lands within float rounding of 0 can take the other sign in another engine.

    python benchmarks/export_parity.py runs/r20/best.pt --data ../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets, transforms

from irconvert.checkpoint import load_checkpoint, model_from_checkpoint
from irconvert.export import export_checkpoint, load_predictor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

FORMATS = {"packed": ("model.irc", {}), "onnx": ("model.onnx", {}),
           "onnx-packed": ("model-packed.onnx", {"onnx_packed": True}),
           "openvino": ("model_ov", {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("checkpoint", help="run checkpoint (.pt) or run directory")
    parser.add_argument("--data", required=True, help="ImageFolder root with test/ inside")
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--out", type=Path, help="write OUT.json")
    args = parser.parse_args(argv)

    ckpt = load_checkpoint(args.checkpoint)
    norm = ckpt.get("normalization") or {"mean": [0.485, 0.456, 0.406],
                                         "std": [0.229, 0.224, 0.225]}
    tf = transforms.Compose([transforms.ToTensor(),
                             transforms.Normalize(norm["mean"], norm["std"])])
    test = datasets.ImageFolder(str(Path(args.data) / "test"), transform=tf)
    # ImageFolder sorts by class: a strided subset keeps every class
    picks = np.arange(len(test)) if args.limit <= 0 else np.linspace(
        0, len(test) - 1, min(args.limit, len(test))).astype(int)
    n = len(picks)
    images = torch.stack([test[int(i)][0] for i in picks])
    labels = torch.tensor([test.targets[int(i)] for i in picks])
    model = model_from_checkpoint(ckpt)
    with torch.no_grad():
        ref = torch.cat([model(b) for b in images.split(args.batch_size)]).numpy()
    rows = {"pytorch": {"top1": float((ref.argmax(1) == labels.numpy()).mean() * 100)}}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, (name, kwargs) in FORMATS.items():
            path = Path(tmp) / name
            export_checkpoint(args.checkpoint, fmt.split("-")[0], path, **kwargs)
            predictor = load_predictor(path)
            out = np.concatenate([predictor(b.numpy()) for b in images.split(args.batch_size)])
            differ = int((out.argmax(1) != ref.argmax(1)).sum())
            rows[fmt] = {
                "top1": float((out.argmax(1) == labels.numpy()).mean() * 100),
                "top1_differs": differ,
                "agreement": 100.0 * (n - differ) / n,
                "max_abs_logit_diff": float(np.abs(out - ref).max()),
                "images_within_1e-4": int((np.abs(out - ref).max(1) <= 1e-4).sum()),
            }
    result = {"checkpoint": str(args.checkpoint), "images": n, "machine": machine(),
              "formats": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
