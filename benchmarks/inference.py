"""Inference speed and size of a 1W/1A ResNet-18: fp32 vs binary ONNX vs OpenVINO binary IR.

Builds a torchvision ResNet-18 with random weights (speed does not depend on
their values) and randomized BatchNorm statistics, binarizes it with the
default IR-Net config (stem, classifier and 1x1 downsample convolutions stay
fp32; 1W/1A), exports it, and times on this CPU:

- ``onnxruntime fp32``: the original float model in onnxruntime (default session);
- ``openvino fp32``: the float model in OpenVINO, with the f32 precision hint
  and with the plugin's default hint (bf16 on CPUs with AMX or AVX512_BF16);
- ``openvino int8 (NNCF)``: the float model quantized by NNCF, OpenVINO's
  post-training quantization (``pip install nncf``; 64 calibration images):
  what a user who wants a fast CPU model picks instead of a binary one;
- ``onnxruntime binary``: the binary ONNX (float convolutions of +-1 values);
- ``openvino binary``: the OpenVINO IR with BinaryConvolution kernels, and
  ``openvino binary + int8`` with the kept layers in int8 (calibrated on 64
  random images: with random weights, real images would not make the ranges
  any more meaningful, and speed does not depend on them), each with both
  precision hints;

at batch 1 and 32, with 1 thread and all threads, input 224x224, the engines
taking turns (round robin) so that load changes hit them alike. Prints a
markdown report (and writes it with ``--out``) for docs/benchmarks.md.

Usage:
    python benchmarks/inference.py [--runs 10] [--out docs/benchmarks-inference.md]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import irconvert
from irconvert.atomic import write_text
from irconvert.export import export_onnx, export_openvino, save_packed
from irconvert.export.bench import BASELINE, BenchRow, compare, model_bytes
from irconvert.export.runtime import Predictor, load_predictor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_flags, load_average, machine


def randomize_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def fp32_onnx(model: nn.Module, path: Path) -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(model, (torch.randn(2, 3, 224, 224),), str(path), dynamo=True,
                          opset_version=18, input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)


def nncf_int8(float_xml: Path, calib: np.ndarray, out: Path) -> Path | None:
    """The float IR quantized to int8 by NNCF (default preset), or None without nncf."""
    try:
        import nncf
    except ImportError:
        print("nncf is not installed: no int8 peer (pip install nncf)")
        return None
    import openvino as ov

    model = ov.Core().read_model(str(float_xml))
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    quantized = nncf.quantize(model, dataset, subset_size=len(calib))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per setting")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="0 = all")
    parser.add_argument("--rounds", type=int, default=3, help="engines take turns this often")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--workdir", type=Path, help="keep the exported files here")
    args = parser.parse_args()

    torch.manual_seed(0)
    import torchvision

    float_model = torchvision.models.resnet18()
    randomize_bn(float_model)
    float_model.eval()
    binary = copy.deepcopy(float_model)
    report = irconvert.binarize_(binary, irconvert.BinarizeConfig(), warn=False)
    binary.eval()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="irconvert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    files = {
        "fp32 .pth": work / "resnet18.pth", "fp32 ONNX": work / "resnet18_fp32.onnx",
        "binary ONNX": work / "resnet18_bin.onnx",
        "binary ONNX (packed)": work / "resnet18_bin_packed.onnx",
        "OpenVINO binary IR": work / "resnet18_bin_ov",
        "OpenVINO binary + int8 IR": work / "resnet18_bin_int8_ov", ".irc": work / "resnet18.irc",
    }
    t0 = time.time()
    torch.save(float_model.state_dict(), files["fp32 .pth"])
    fp32_onnx(float_model, files["fp32 ONNX"])
    export_onnx(binary, files["binary ONNX"], force=True)
    export_onnx(binary, files["binary ONNX (packed)"], packed=True, force=True)
    ov_res = export_openvino(binary, files["OpenVINO binary IR"], force=True)
    # Random weights: any images calibrate the ranges as well as real ones would
    # (speed does not depend on them). Standard-normal pixels, like normalised images.
    calib = np.random.default_rng(1).standard_normal((64, 3, 224, 224), dtype=np.float32)
    int8_res = export_openvino(binary, files["OpenVINO binary + int8 IR"], force=True,
                               calibration=calib, calibration_source="64 random images")
    save_packed(binary, files[".irc"], arch="resnet18", num_classes=1000,
                config=irconvert.BinarizeConfig(), force=True)
    print(f"exported in {time.time() - t0:.0f}s; OpenVINO: {ov_res.binary_convolutions} "
          f"BinaryConvolution layers, fallbacks: {ov_res.fallback or 'none'}; int8: "
          f"{[x.name for x in int8_res.layers if x.precision == 'int8']}")
    import openvino as ov

    ov_float = work / "resnet18_fp32_ov.xml"
    ov.save_model(ov.convert_model(str(files["fp32 ONNX"])), str(ov_float),
                  compress_to_fp16=False)

    int8_peer = nncf_int8(ov_float, calib, work / "resnet18_int8_nncf.xml")
    if int8_peer is not None:
        files["OpenVINO int8 IR (NNCF)"] = int8_peer

    def hinted(path: Path) -> Callable[[int], Predictor]:
        return lambda n: load_predictor(path, threads=n, isolate=True, precision="default")

    engines: dict[str, Path | Callable[[int], Predictor]] = {
        BASELINE: files["fp32 ONNX"],
        "openvino fp32 (f32 hint)": ov_float,
        "openvino fp32 (default hint)": hinted(ov_float),
    }
    if int8_peer is not None:
        engines["openvino int8, NNCF (default hint)"] = hinted(int8_peer)
    engines.update({
        "onnxruntime binary": files["binary ONNX"],
        "openvino binary (f32 hint)": files["OpenVINO binary IR"],
        "openvino binary (default hint)": hinted(files["OpenVINO binary IR"]),
        "openvino binary + int8 (f32 hint)": files["OpenVINO binary + int8 IR"],
        "openvino binary + int8 (default hint)": hinted(files["OpenVINO binary + int8 IR"]),
    })
    rows: dict[tuple[str, int, int], BenchRow] = {}
    load_start = load_average()
    for batch in args.batches:
        for row in compare(engines, [batch], args.threads, warmup=2, rounds=args.rounds,
                           runs=args.runs if batch == 1 else max(3, args.runs // 3)):
            rows[(row.label, row.batch, row.threads)] = row
            print(f"{row.label:40s} batch {batch:3d} threads {row.threads or 'all':>3}: "
                  f"{row.median_ms:9.2f} ms  {row.throughput:8.1f} img/s  "
                  f"{row.speedup:5.2f}x", flush=True)
    load_end = load_average()
    load = ("load average unknown" if load_start is None or load_end is None else
            f"load average {load_start:.2f} when the timing started, {load_end:.2f} when it "
            "ended (its own threads included)")
    # the peer of a binary row: the fastest engine that is not binary, same batch and threads
    peer = {(b, t): min(r.median_ms for (name, b2, t2), r in rows.items()
                        if b2 == b and t2 == t and "binary" not in name)
            for (_, b, t) in rows}

    lines = [
        "## Inference speed: ResNet-18 1W/1A (224x224, CPU)",
        "",
        f"Machine: {machine()}; flags: {', '.join(cpu_flags()) or 'unknown'}; "
        f"{os.cpu_count()} logical CPUs; {load}. torch {torch.__version__}, "
        f"onnxruntime {__import__('onnxruntime').__version__}, openvino {ov.__version__}"
        + (f", nncf {__import__('nncf').__version__}" if int8_peer else ", no nncf "
           "(pip install nncf for the int8 peer)") + ". "
        f"Median of {args.runs} timed runs (batch 1) / {max(3, args.runs // 3)} (larger "
        f"batches) after 2 warm-up runs, engines taking turns in {args.rounds} rounds. "
        "Random weights; 16 of 21 convolutions binarized "
        "(stem, 3 downsample 1x1 convs and the classifier stay full precision: fp32, or "
        "int8 in the int8 IR). 'vs best non-binary': the fastest engine without binary "
        "layers at the same batch and threads, over this one (above 1: the binary model wins).",
        "",
        "| engine | batch | threads | latency ms | images/s | vs onnxruntime fp32 | "
        "vs best non-binary |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, batch, threads), row in sorted(rows.items(), key=lambda kv: (kv[0][2] == 0,
                                                                            kv[0][1])):
        lines.append(f"| {name} | {batch} | {threads or 'all'} | {row.median_ms:.2f} | "
                     f"{row.throughput:.1f} | {row.speedup or 0:.2f}x | "
                     f"{peer[(batch, threads)] / row.median_ms:.2f}x |")
    pth = model_bytes(files["fp32 .pth"])
    lines += ["", "| file | bytes | vs fp32 .pth |", "|---|---:|---:|"]
    for label, path in files.items():
        size = model_bytes(path)
        lines.append(f"| {label} | {size:,} | {pth / size:.1f}x smaller |")
    lines += ["", f"Conversion report: {report.binarized_layers} binarized layers, "
              f"{report.binarized_params:,} of {report.total_params:,} parameters."]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
