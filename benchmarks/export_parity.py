"""Exported files against the PyTorch model they came from, on real test images.

Exports a run checkpoint (or a packed ``.irc`` file) to ``.irc``, ONNX
(float and packed weights), OpenVINO IR and OpenVINO IR with int8 for the
layers kept in full precision (calibrated on ``--calib-images`` images of the
training split), runs every file and the PyTorch model on the same
normalised test images, and reports per format: top-1 agreement with
PyTorch, the number of images whose top-1 differs, top-1 accuracy, and the
max |logit difference|. Binary networks are sensitive to rounding: a
pre-activation that lands within float rounding of 0 can take the other sign
in another engine; int8 moves the kept layers' outputs by more than rounding.
For the fp32 exports, every image whose logits differ by more than 1e-4 (up
to 64) goes through the layer-by-layer check
(:func:`irconvert.export.parity.check_parity`), which accepts only sign flips
within rounding of their threshold, replayed in PyTorch (``layer_check``).

An ``.irc`` source is its own PyTorch reference (``load_packed`` runs the
checkpoint's arithmetic exactly) and has no ``packed`` row.

    python benchmarks/export_parity.py runs/r20/best.pt --data ../shared/data/cifar10
    python benchmarks/export_parity.py results/cifar10-resnet20-1w1a.irc \\
        --data ../shared/data/cifar10 --out results/export-parity-r20-1w1a-int8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets, transforms

from irconvert.atomic import write_text
from irconvert.export import export_checkpoint, load_predictor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

FORMATS = {"packed": ("model.irc", {}), "onnx": ("model.onnx", {}),
           "onnx-packed": ("model-packed.onnx", {"onnx_packed": True}),
           "openvino": ("model_ov", {}), "openvino-int8": ("model_ov_int8", {"int8": True})}


def _reference(source: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The PyTorch model and its recorded preprocessing."""
    if source.endswith(".irc"):
        from irconvert.export.packed import describe_packed, load_packed

        return load_packed(source), dict(describe_packed(source).preprocessing or {})
    from irconvert.checkpoint import load_run_checkpoint, model_from_checkpoint

    ckpt = load_run_checkpoint(source)
    return model_from_checkpoint(ckpt), {"normalization": ckpt.get("normalization")}


def _export(source: str, fmt: str, path: Path, model: torch.nn.Module, meta: dict[str, Any],
            data: str, calib_images: int) -> None:
    kwargs = dict(FORMATS[fmt][1])
    if fmt == "openvino-int8":
        kwargs.update(data=f"imagefolder:{data}", calib_images=calib_images)
    if not source.endswith(".irc"):
        export_checkpoint(source, fmt.split("-")[0], path, **kwargs)
        return
    from irconvert.export import export_onnx, export_openvino

    if fmt.startswith("onnx"):
        export_onnx(model, path, packed=fmt == "onnx-packed", metadata=meta)
        return
    calibration, where = None, ""
    if fmt == "openvino-int8":
        from irconvert.export.calibration import calibration_images

        calib = calibration_images(kwargs["data"], calib_images, meta)
        calibration, where = calib.images, calib.source
    res = export_openvino(model, path, metadata=meta, calibration=calibration,
                          calibration_source=where)
    if fmt == "openvino-int8":
        print(f"int8 layers: {[(x.name, x.why) for x in res.layers if x.precision == 'int8']}",
              file=sys.stderr)


# fp32 exports: every differing logit must be explained bit by bit
LAYER_CHECKED = ("onnx", "onnx-packed", "openvino")
LAYER_CHECK_MAX = 64


def _layer_check(model: torch.nn.Module, path: Path, images: torch.Tensor, out: np.ndarray,
                 ref: np.ndarray) -> dict[str, Any]:
    """:func:`irconvert.export.parity.check_parity` on the images whose logits differ.

    Each such image (up to ``LAYER_CHECK_MAX``) must differ only by sign flips
    within rounding of their thresholds, replayed in PyTorch.
    """
    from irconvert.export.freeze import binary_layers, freeze
    from irconvert.export.parity import check_parity
    from irconvert.nn import IRLayer

    suspects = np.flatnonzero(np.abs(out - ref).max(1) > 1e-4)[:LAYER_CHECK_MAX]
    if not len(suspects):
        return {"images": 0, "ok": True, "near_flips": 0, "failure": ""}
    has_ir = any(isinstance(m, IRLayer) for m in model.modules())
    frozen = freeze(model) if has_ir or not binary_layers(model) else model
    report = check_parity(frozen, path, images[suspects].numpy())
    return {"images": len(suspects), "ok": report.ok, "near_flips": report.near,
            "failure": report.failure}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("checkpoint", help="run checkpoint (.pt), run directory or .irc file")
    parser.add_argument("--data", required=True, help="ImageFolder root with train/ and test/")
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--calib-images", type=int, default=256,
                        help="training images that calibrate the int8 variant")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--out", type=Path, help="write OUT.json")
    args = parser.parse_args(argv)

    model, meta = _reference(args.checkpoint)
    model.eval()
    norm = meta.get("normalization") or {"mean": [0.485, 0.456, 0.406],
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
    with torch.no_grad():
        ref = torch.cat([model(b) for b in images.split(args.batch_size)]).numpy()
    rows: dict[str, Any] = {"pytorch": {"top1": float((ref.argmax(1) == labels.numpy()).mean()
                                                      * 100)}}
    formats = [f for f in args.formats if not (f == "packed" and args.checkpoint.endswith(".irc"))]
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            path = Path(tmp) / FORMATS[fmt][0]
            t0 = time.time()
            _export(args.checkpoint, fmt, path, model, meta, args.data, args.calib_images)
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
            if fmt in LAYER_CHECKED:
                rows[fmt]["layer_check"] = _layer_check(model, path, images, out, ref)
            print(f"{fmt}: {rows[fmt]} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    if "openvino-int8" in rows:
        rows["openvino-int8"]["top1_minus_pytorch"] = (rows["openvino-int8"]["top1"]
                                                       - rows["pytorch"]["top1"])
        rows["openvino-int8"]["calib_images"] = args.calib_images
    result = {"checkpoint": str(args.checkpoint), "images": n, "machine": machine(),
              "formats": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        write_text(args.out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
