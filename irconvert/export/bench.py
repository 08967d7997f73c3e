"""Latency and throughput of exported models (median over timed runs).

:func:`bench` times files a user already has. :func:`compare` builds, from
one run checkpoint, everything worth comparing and times it side by side:
onnxruntime fp32 of the original (float) model as the baseline, the binary
export in each engine (``.irc`` in PyTorch, ONNX in onnxruntime, OpenVINO IR)
and, given calibration data, the OpenVINO IR with int8 kept layers. The
engines take turns (round robin) so that a machine whose load changes during
the run slows them all alike.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irconvert.export.engines import onnx_predictor, ort_options
from irconvert.export.runtime import Predictor, checked_format, load_predictor

__all__ = ["BASELINE", "BenchRow", "bench", "bench_predictor", "build_comparison", "compare",
           "model_bytes"]

DEFAULT_INPUT_SIZE = (3, 224, 224)


@dataclass
class BenchRow:
    """One (model, batch, threads) measurement."""

    path: str
    format: str
    batch: int
    threads: int
    median_ms: float
    throughput: float  # images per second
    runs: int
    bytes: int
    label: str = ""  # what it is, e.g. "OpenVINO binary + int8" (compare's rows)
    speedup: float | None = None  # vs the baseline at the same batch and threads
    input_size: tuple[int, ...] = ()  # C, H, W of one input


def model_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk: a file, an OpenVINO xml + bin, or a directory's files."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.is_file())
    if p.suffix == ".xml" and p.with_suffix(".bin").exists():
        return p.stat().st_size + p.with_suffix(".bin").stat().st_size
    return p.stat().st_size


def bench_predictor(
    predict: Predictor, batch: int, *, threads: int = 0, warmup: int = 2, runs: int = 10,
    min_seconds: float = 0.0, input_size: tuple[int, ...] | None = None,
) -> BenchRow:
    """Time ``predict`` on random input of ``batch`` images; median latency per call."""
    size = input_size or predict.input_size or DEFAULT_INPUT_SIZE
    x = np.random.default_rng(0).standard_normal((batch, *size), dtype=np.float32)
    for _ in range(warmup):
        predict(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return BenchRow(path=str(predict.path), format=predict.format, batch=batch, threads=threads,
                    median_ms=median * 1000, throughput=batch / median, runs=len(times),
                    bytes=model_bytes(predict.path), input_size=tuple(size))


def bench(
    paths: list[str | os.PathLike[str]], batches: list[int], threads: list[int], *,
    warmup: int = 2, runs: int = 10, input_size: tuple[int, ...] | None = None,
) -> list[BenchRow]:
    """Benchmark every path at every batch size and thread count (0 = all cores).

    Raises:
        LoadError, MissingDependencyError: as :func:`load_predictor`.
    """
    rows = []
    for path in paths:
        for n in threads:
            predict = load_predictor(path, threads=n, isolate=True)
            for batch in batches:
                rows.append(bench_predictor(predict, batch, threads=n, warmup=warmup, runs=runs,
                                            input_size=input_size))
    return rows


BASELINE = "onnxruntime fp32 (original model)"


def float_onnx(model: Any, path: Path, input_size: tuple[int, ...]) -> None:
    """The float model as ONNX (dynamic batch) for the fp32 baseline."""
    import contextlib
    import io

    import torch

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(model.eval(), (torch.randn(2, *input_size),), str(path), dynamo=True,
                          opset_version=18, input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},),
                          external_data=False)


def _ort_default(path: Path, threads: int) -> Predictor:
    """onnxruntime with all its graph optimizations: the fair fp32 baseline."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), ort_options(threads, spin=False),
                                   providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {"input": x})[0]
        return out

    dims = session.get_inputs()[0].shape[1:]
    size = tuple(int(d) for d in dims) if all(isinstance(d, int) for d in dims) else None
    return Predictor(path, "onnx", run, size)


def build_comparison(src: str | os.PathLike[str], workdir: Path, *, data: str | None = None,
                     calib_images: int = 256, input_size: tuple[int, ...] | None = None,
                     ) -> tuple[dict[str, Path], list[str]]:
    """Export a run checkpoint every way :func:`compare` times; ``({label: file}, notes)``.

    The original model is the checkpoint's model with its IR-Net layers
    turned back into float layers (:func:`irconvert.unbinarize_`, latent
    weights; block transforms such as extra shortcuts stay, and cost little).
    """
    import copy

    from irconvert.checkpoint import load_run_checkpoint, model_from_checkpoint
    from irconvert.convert import unbinarize_
    from irconvert.export.api import export_checkpoint

    ckpt = load_run_checkpoint(src)
    model = model_from_checkpoint(ckpt)
    size = input_size or tuple(getattr(model, "irconvert_input_size", None) or DEFAULT_INPUT_SIZE)
    original = copy.deepcopy(model)
    unbinarize_(original)
    files = {BASELINE: workdir / "original_fp32.onnx"}
    float_onnx(original, files[BASELINE], size)
    exports: dict[str, tuple[str, Path, dict[str, Any]]] = {
        "PyTorch binary (.irc)": ("packed", workdir / "model.irc", {}),
        "onnxruntime binary": ("onnx", workdir / "model.onnx", {}),
        "OpenVINO binary": ("openvino", workdir / "model_ov", {"int8": False})}
    notes = []
    if data is not None:
        exports["OpenVINO binary + int8"] = ("openvino", workdir / "model_ov_int8",
                                             {"data": data, "calib_images": calib_images})
    else:
        notes.append("no --data: the int8 row is left out (it needs calibration images)")
    for label, (fmt, path, kwargs) in exports.items():
        export_checkpoint(src, fmt, path, input_size=input_size, **kwargs)
        files[label] = path
    return files, notes


Engine = Path | Callable[[int], Predictor]


def _engine(label: str, engine: Engine, threads: int) -> Predictor:
    """One engine of :func:`compare`; onnxruntime without spin-waiting (see ort_options)."""
    if callable(engine):
        return engine(threads)
    if label == BASELINE:
        return _ort_default(engine, threads)
    if checked_format(Path(engine)).name == "onnx":
        return onnx_predictor(Path(engine), threads, spin=False)
    return load_predictor(engine, threads=threads, isolate=True)


def compare(
    files: Mapping[str, Engine], batches: list[int], threads: list[int], *, warmup: int = 2,
    runs: int = 10, rounds: int = 3, input_size: tuple[int, ...] | None = None,
) -> list[BenchRow]:
    """Time each labelled file at every batch and thread count, engines taking turns.

    A file is a path (loaded with :func:`load_predictor`) or a function of
    the thread count that returns a predictor (another engine setting, e.g.
    OpenVINO's default precision hint).

    The first label is the baseline of the ``speedup`` column (its latency
    over each row's, at the same batch and threads). Each setting runs
    ``rounds`` rounds of ``ceil(runs / rounds)`` timed calls per engine,
    round robin; the row holds the median over all of them.
    """
    labels = list(files)
    rows: list[BenchRow] = []
    rounds = max(1, min(rounds, runs))
    per_round = -(-runs // rounds)
    for n in threads:
        predictors = {label: _engine(label, path, n) for label, path in files.items()}
        # each model at its own input size (recorded at export), else the
        # others' (the float baseline records none), else the default
        known = next((p.input_size for p in predictors.values() if p.input_size), None)
        sizes = {label: tuple(input_size or p.input_size or known or DEFAULT_INPUT_SIZE)
                 for label, p in predictors.items()}
        for batch in batches:
            rng = np.random.default_rng(0)
            inputs = {label: rng.standard_normal((batch, *sizes[label]), dtype=np.float32)
                      for label in labels}
            times: dict[str, list[float]] = {label: [] for label in labels}
            for label in labels:
                for _ in range(warmup):
                    predictors[label](inputs[label])
            for _ in range(rounds):
                for label in labels:
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        predictors[label](inputs[label])
                        times[label].append(time.perf_counter() - t0)
            base = statistics.median(times[labels[0]])
            for label in labels:
                median = statistics.median(times[label])
                p = predictors[label]
                rows.append(BenchRow(path=str(p.path), format=p.format, batch=batch, threads=n,
                                     median_ms=median * 1000, throughput=batch / median,
                                     runs=len(times[label]), bytes=model_bytes(p.path),
                                     label=label, speedup=base / median,
                                     input_size=sizes[label]))
    return rows
