"""The one interface every exported model runs behind: numpy images in, logits out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from irconvert.errors import DataError

__all__ = ["Predictor"]


class Predictor:
    """A callable ``f(images) -> logits`` on numpy float32 arrays, batch first.

    Attributes:
        path: the exported file or directory.
        format: ``packed``, ``onnx`` or ``openvino``.
        input_size: ``(C, H, W)`` the model expects, when the file says so.
        preprocessing: the input preprocessing the file recorded at export
            (``normalization``, ``input_size``, ``eval_resize``, ``eval_crop``;
            see :mod:`irconvert.export.meta`), or None.
        normalization: ``{"mean": [...], "std": [...]}`` the model was trained
            with, when the file records it (None for files without it).
    """

    def __init__(self, path: Path, fmt: str, run: Callable[[np.ndarray], np.ndarray],
                 input_size: tuple[int, ...] | None,
                 preprocessing: dict[str, Any] | None = None, *, fixed: bool = False) -> None:
        self.path, self.format, self._run = path, fmt, run
        self.preprocessing = preprocessing
        recorded = (preprocessing or {}).get("input_size")
        self.input_size = input_size or (tuple(recorded) if recorded else None)
        # ONNX and OpenVINO graphs are traced at one C,H,W; their engines
        # reject any other with a message about tensor indices.
        self.fixed = fixed and self.input_size is not None

    @property
    def normalization(self) -> dict[str, list[float]] | None:
        norm: dict[str, list[float]] | None = (self.preprocessing or {}).get("normalization")
        return norm

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        if self.fixed and tuple(x.shape[1:]) != tuple(self.input_size or ()):
            want, got = (",".join(str(d) for d in dims)
                         for dims in (self.input_size or (), x.shape[1:]))
            raise DataError(f"{self.path}: takes inputs of C,H,W = {want} (fixed when it was "
                            f"exported), not {got}; export it again with --input-size {got}")
        return self._run(x)

    def __repr__(self) -> str:
        return f"Predictor({str(self.path)!r}, format={self.format!r})"
