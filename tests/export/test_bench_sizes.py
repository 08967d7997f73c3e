"""bench and compare: each model at its own input size; engines that share the process fairly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from irconvert.export.bench import BASELINE, compare
from irconvert.export.engines import ort_options
from irconvert.export.predictor import Predictor


def spin_entry(options: Any) -> str | None:
    """The session's spin-wait setting, None where it keeps onnxruntime's default."""
    try:
        return str(options.get_session_config_entry("session.intra_op.allow_spinning"))
    except RuntimeError:
        return None


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


def test_compare_runs_onnxruntime_without_spin_waiting(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Spinning onnxruntime sessions slowed the OpenVINO engine timed after
    # them in the same process (docs/export.md), so compare() makes quiet ones.
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["logits"])], "flat",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 48])])
    path = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)

    spinning: list[str | None] = []
    real = ort.InferenceSession

    def spy(model: object, options: object = None, *args: object, **kwargs: object) -> object:
        assert options is not None
        spinning.append(spin_entry(options))
        return real(model, options, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    rows = compare({BASELINE: path, "binary": path}, [2], [2], warmup=1, runs=1, rounds=1)
    assert spinning == ["0", "0"]
    assert [r.input_size for r in rows] == [(3, 4, 4), (3, 4, 4)]
    # a predictor of its own keeps onnxruntime's spinning default
    assert spin_entry(ort_options(2)) is None
