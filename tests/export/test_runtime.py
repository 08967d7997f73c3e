"""Loading exported files for inference: damaged files are one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from irconvert.errors import LoadError
from irconvert.export.engines import _engine_reason
from irconvert.export.runtime import load_predictor


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _one_line(err: pytest.ExceptionInfo[LoadError], path: Path, needle: str) -> None:
    message = str(err.value)
    assert message.startswith(str(path)) and needle in message, message
    assert "\n" not in message


def test_empty_and_truncated_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    good = _tiny_onnx(tmp_path / "good.onnx")
    assert load_predictor(good) is not None
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(LoadError) as err:
        load_predictor(empty)
    _one_line(err, empty, "empty file (0 bytes)")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[:-7])
    with pytest.raises(LoadError) as err:
        load_predictor(cut)
    _one_line(err, cut, "truncated or damaged: export it again")
    assert "[ONNXRuntimeError]" not in str(err.value)


def test_openvino_without_its_bin_names_the_missing_file(tmp_path: Path) -> None:
    # Checked before OpenVINO is imported, which printed only "core.cpp:84:".
    folder = tmp_path / "ov"
    folder.mkdir()
    (folder / "model.xml").write_text("<net/>")
    for path in (folder, folder / "model.xml"):
        with pytest.raises(LoadError) as err:
            load_predictor(path)
        _one_line(err, folder / "model.bin", "missing; OpenVINO IR is model.xml and model.bin")


def test_engine_reason_keeps_the_line_that_says_what_is_wrong() -> None:
    ov = RuntimeError("Exception from src/inference/src/cpp/core.cpp:84:\n"
                      "Check 'is_valid_weights_range(...)' failed at src/core/x.cpp:900:\n"
                      "Incorrect weights in bin file!\n\n")
    assert _engine_reason(ov) == "Incorrect weights in bin file!"
    ort = RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from "
                       "/a/b.onnx failed:Protobuf parsing failed.")
    assert _engine_reason(ort) == "Protobuf parsing failed"
    assert _engine_reason(RuntimeError()) == "RuntimeError"
