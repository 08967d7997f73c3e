"""Architecture coverage: convert, train one step, export and check parity, for a panel of models.

For every architecture of the panel (torchvision and timm, random weights)
and both modes (1W/1A, 1W/32A), the steps a user's run goes through:

1. ``convert``: ``binarize_`` with the default config (what ``irconvert
   binarize`` does without options). Records the binarized layers, the
   layers kept because the forward pass never calls them, and the layers
   given an activation threshold because their inputs are one-signed.
2. ``calibrate``: the trainer's start on real images (CIFAR-10 test images
   resized to the model's input): activation thresholds from data, then
   BatchNorm statistics re-estimated. Random weights with real-image
   statistics, so the exports are judged on realistic activations.
3. ``train``: one training step on a batch of real images: the loss is
   finite and every binarized layer gets a finite, non-zero weight gradient.
4. ``onnx`` and ``openvino``: export the frozen model, run the file (OpenVINO
   once in a child process, so that an engine crash is a result, not the end
   of the benchmark) and check it against PyTorch layer by layer on the same
   images (:func:`irconvert.export.parity.check_parity`): every binary
   activation equal, except flips within ``1e-5`` (relative) of their
   threshold, which are replayed in PyTorch to prove they explain what
   follows; then the logits within ``1e-4 + 1e-4 * max|logit|``.

Usage:
    python benchmarks/arch_coverage.py --data ../shared/data/cifar10 \\
        --out results/arch-coverage [--archs resnet18 timm:dla34 ...] [--modes 1w1a 1w32a]

Results go to OUT.jsonl (one line per architecture and mode, appended as
they finish; ``--skip-done`` resumes) and OUT.md (the table and the counts).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

import irconvert
from irconvert.atomic import write_text
from irconvert.export.isolated import predict_isolated
from irconvert.export.parity import check_parity
from irconvert.nn import IRLayer
from irconvert.nn.thresholds import init_act_thresholds
from irconvert.train.bn import recalibrate_bn

# name -> input size (square); torchvision unless "timm:". Transformers whose
# position embeddings fix the size keep their own (and inception_v3, whose
# training-mode auxiliary head needs 299); CNNs run at 96x96 to save time.
PANEL: dict[str, int] = {
    "resnet18": 96, "resnet50": 96, "resnext50_32x4d": 96, "wide_resnet50_2": 96,
    "vgg11_bn": 96, "alexnet": 96, "squeezenet1_1": 96, "googlenet": 96,
    "inception_v3": 299, "densenet121": 96, "mobilenet_v2": 96, "mobilenet_v3_large": 96,
    "mnasnet1_0": 96, "shufflenet_v2_x1_0": 96, "regnet_y_400mf": 96,
    "efficientnet_b0": 96, "convnext_tiny": 96, "swin_t": 96, "vit_b_16": 224,
    "maxvit_t": 224,
    "timm:resnet18": 96, "timm:dla34": 96, "timm:dpn68": 96, "timm:ghostnet_100": 96,
    "timm:rexnet_100": 96, "timm:tf_efficientnet_lite0": 96,
    "timm:deit_tiny_patch16_224": 224, "timm:convnext_atto": 96, "timm:resnet26d": 96,
    "timm:mobilevitv2_050": 96,
}
MODES = {"1w1a": 1, "1w32a": 32}
STEPS = ("convert", "calibrate", "train", "onnx", "openvino")


def build(name: str, size: int) -> nn.Module:
    """A random-weight model whose zero-initialised gammas and heads are given values."""
    torch.manual_seed(0)
    if name.startswith("timm:"):
        import timm

        kwargs: dict[str, Any] = {"num_classes": 10}
        model = timm.create_model(name[5:], pretrained=False, **kwargs)
    else:
        import torchvision

        kwargs = {"num_classes": 10}
        if name == "inception_v3":
            kwargs["init_weights"] = True
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    model.irconvert_input_size = (3, size, size)  # type: ignore[assignment]
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.numel() and not weight.any():
                # zero-init residual gammas / layer scales / heads would hide
                # everything behind them from the checks
                weight.normal_(1.0 if weight.dim() == 1 else 0.0, 0.02 if weight.dim() > 1 else 0.1)
        for p in model.parameters():  # layer-scale gammas (1e-6) likewise
            if p.dim() == 1 and p.numel() > 1 and 0 < float(p.abs().max()) < 1e-4:
                p.fill_(1.0)
    return model


def images(data: Path, size: int, count: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` CIFAR-10 test images resized to ``size``, ImageNet-normalised, and labels."""
    from PIL import Image

    files = sorted((data / "test").glob("*/*.png"))
    classes = sorted({f.parent.name for f in files})
    picked = [files[(offset + i) * 997 % len(files)] for i in range(count)]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    out = []
    for f in picked:
        img = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
        out.append((x - mean) / std)
    return torch.stack(out), torch.tensor([classes.index(f.parent.name) for f in picked])


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    return out[0]  # inception/googlenet training outputs: (logits, aux...)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    model.train()
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(_logits(model(x)), y)
    loss.backward()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, IRLayer)}
    dead, nonfinite = [], []
    for name, layer in layers.items():
        grad = layer.weight.grad  # type: ignore[union-attr]
        if grad is None or not grad.any():
            dead.append(name)
        elif not torch.isfinite(grad).all():
            nonfinite.append(name)
    model.zero_grad(set_to_none=True)
    ok = math.isfinite(loss.item()) and not dead and not nonfinite
    return {"ok": ok, "loss": round(loss.item(), 4), "dead": dead[:5], "n_dead": len(dead),
            "nonfinite": nonfinite[:5], "n_nonfinite": len(nonfinite)}


def parity(frozen: nn.Module, path: Path, x: torch.Tensor) -> dict[str, Any]:
    """The layer-by-layer check of :mod:`irconvert.export.parity`, as a row cell."""
    report = check_parity(frozen, path, x.numpy(), threads=1)
    return {"ok": report.ok, "layers": len(report.layers), "near_flips": report.near,
            "max_diff": report.logit_diff, "tol": report.logit_tol, "failure": report.failure}


def one(name: str, mode: str, size: int, data: Path, work: Path,
        one_signed: str = "threshold") -> dict[str, Any]:
    from irconvert.export import export_onnx, freeze
    from irconvert.export.openvino_export import export_openvino

    row: dict[str, Any] = {"arch": name, "mode": mode, "size": size}
    t0 = time.perf_counter()
    step = "convert"
    try:
        model = build(name, size)
        config = irconvert.BinarizeConfig(act_bits=MODES[mode], one_signed_inputs=one_signed)
        report = irconvert.binarize_(model, config, warn=False)
        row["convert"] = {"ok": True, "binarized": report.binarized_layers,
                          "uncalled": sum("not called" in r.reason for r in report.rows),
                          "thresholds": len(report.fixes), "warnings": len(report.warnings)}
        step = "calibrate"
        calib = [images(data, size, 16, offset=100 + 16 * i) for i in range(3)]
        model.train()
        init_act_thresholds(model, calib, 2)
        recalibrate_bn(model, calib, steps=3)
        row["calibrate"] = {"ok": True}
        step = "train"
        x, y = images(data, size, 8)
        row["train"] = train_step(model, x, y)
        model.eval()
        frozen = freeze(model)
        step = "onnx"
        onnx_path = work / f"{name.replace(':', '_')}-{mode}.onnx"
        export_onnx(frozen, onnx_path, input_size=(3, size, size), force=True)
        row["onnx"] = parity(frozen, onnx_path, x)
        step = "openvino"
        ov_dir = work / f"{name.replace(':', '_')}-{mode}-ov"
        res = export_openvino(frozen, ov_dir, input_size=(3, size, size), force=True)
        # a crash of the engine is a result: try the file in a child process first
        run = predict_isolated(ov_dir, x.numpy())
        row["openvino"] = ({"ok": False, "crash": run.why} if run.outputs is None
                           else parity(frozen, ov_dir, x))
        row["openvino"]["binary_convolutions"] = res.binary_convolutions
    except Exception as exc:  # a failed step is a result: record it and go on
        row[step] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                     "where": traceback.format_exc().strip().splitlines()[-3][:200]}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["passed"] = all(row.get(s, {}).get("ok", False) for s in STEPS)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| arch | mode | binarized | kept: not called | thresholds added | train | "
             "ONNX | OpenVINO (binary convs) | passed |",
             "|---|---|---:|---:|---:|---|---|---|---|"]

    def cell(r: dict[str, Any], step: str) -> str:
        s = r.get(step)
        if s is None:
            return "-"
        if "error" in s:
            return f"error: {s['error'][:60]}"
        if step == "train":
            return "ok" if s["ok"] else f"dead {s['n_dead']}, non-finite {s['n_nonfinite']}"
        if "crash" in s:
            return f"crash ({s['crash'][:40]})"
        text = (f"ok: {s['layers']} layers, {s['near_flips']} near flips, "
                f"diff {s['max_diff']:.1e}" if s["ok"] else f"FAIL: {s['failure'][:90]}")
        if step == "openvino":
            text += f" ({s['binary_convolutions']})"
        return text

    for r in rows:
        c = r.get("convert", {})
        lines.append(f"| {r['arch']} | {r['mode']} | {c.get('binarized', '-')} | "
                     f"{c.get('uncalled', '-')} | {c.get('thresholds', '-')} | "
                     f"{cell(r, 'train')} | {cell(r, 'onnx')} | {cell(r, 'openvino')} | "
                     f"{'yes' if r['passed'] else 'no'} |")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    out = []
    for mode in MODES:
        sel = [r for r in rows if r["mode"] == mode]
        if not sel:
            continue
        counts = ", ".join(f"{s} {sum(r.get(s, {}).get('ok', False) for r in sel)}/{len(sel)}"
                           for s in STEPS)
        passed = sum(r["passed"] for r in sel)
        out.append(f"- {mode}: {counts}; every step: **{passed}/{len(sel)} "
                   f"({100 * passed / len(sel):.0f}%)**")
    near = sum(r.get(s, {}).get("near_flips", 0) for r in rows for s in ("onnx", "openvino"))
    out.append(f"- near-threshold flips replayed over all parity checks (8 images each): {near}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 ImageFolder root")
    parser.add_argument("--archs", nargs="*", help="default: the whole panel; named ones "
                        "are rerun even with --skip-done")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results") / "arch-coverage")
    parser.add_argument("--one-signed", choices=["threshold", "warn"], default="threshold",
                        help="binarize.one_signed_inputs (warn: the behaviour before thresholds)")
    parser.add_argument("--skip-done", action="store_true", help="keep rows already in OUT.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data / "test").is_dir():
        sys.exit(f"error: {args.data}/test not found (a CIFAR-10 ImageFolder root)")
    jsonl = args.out.with_suffix(".jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if args.skip_done and jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            if r["arch"] not in (args.archs or []):
                done[(r["arch"], r["mode"])] = r
        write_text(jsonl, "".join(json.dumps(r) + "\n" for r in done.values()))
    elif jsonl.exists():
        jsonl.unlink()
    args.archs = args.archs or list(PANEL)
    with tempfile.TemporaryDirectory(prefix="irconvert-coverage-") as tmp:
        for name in args.archs:
            for mode in args.modes:
                if (name, mode) in done:
                    continue
                row = one(name, mode, PANEL.get(name, 96), args.data, Path(tmp), args.one_signed)
                done[(name, mode)] = row
                with jsonl.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"{name:32s} {mode:6s} {'PASS' if row['passed'] else 'fail'} "
                      f"{row['seconds']:6.1f}s " + " ".join(
                          f"{s}={'ok' if row.get(s, {}).get('ok') else 'x'}" for s in STEPS),
                      flush=True)
    # with --skip-done the table is the whole file's: a rerun of a few rows completes it
    rows = [r for r in done.values()
            if args.skip_done or (r["arch"] in args.archs and r["mode"] in args.modes)]
    text = (f"# Architecture coverage\n\n{machine()}, torch {torch.__version__}; random weights, "
            f"BatchNorm statistics from CIFAR-10 images; `{' '.join(sys.argv)}`\n\n"
            f"{summary(rows)}\n\n{table(rows)}\n")
    write_text(args.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
