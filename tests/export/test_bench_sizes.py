"""bench and compare time each model at its own input size and say which."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from irconvert.export.bench import compare
from irconvert.export.predictor import Predictor


def fake(path: Path, size: tuple[int, ...], seen: list[tuple[int, ...]]) -> Predictor:
    path.write_bytes(b"x")

    def run(x: np.ndarray) -> np.ndarray:
        seen.append(tuple(x.shape[1:]))
        return np.zeros((len(x), 10), np.float32)

    return Predictor(path, "onnx", run, size)


def test_each_model_runs_at_its_own_size(tmp_path: Path) -> None:
    seen_a: list[tuple[int, ...]] = []
    seen_b: list[tuple[int, ...]] = []
    files = {"a": lambda n: fake(tmp_path / "a.onnx", (3, 32, 32), seen_a),
             "b": lambda n: fake(tmp_path / "b.onnx", (3, 224, 224), seen_b)}
    rows = compare(files, [2], [1], warmup=1, runs=2, rounds=1)
    assert {r.label: r.input_size for r in rows} == {"a": (3, 32, 32), "b": (3, 224, 224)}
    assert set(seen_a) == {(3, 32, 32)} and set(seen_b) == {(3, 224, 224)}
