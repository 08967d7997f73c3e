"""Latency and throughput of exported models (median over timed runs)."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from irconvert.export.runtime import Predictor, load_predictor

__all__ = ["BenchRow", "bench", "bench_predictor", "model_bytes"]

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
                    bytes=model_bytes(predict.path))


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
            predict = load_predictor(path, threads=n)
            for batch in batches:
                rows.append(bench_predictor(predict, batch, threads=n, warmup=warmup, runs=runs,
                                            input_size=input_size))
    return rows
