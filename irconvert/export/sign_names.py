"""Name each binary activation in an exported graph after the layer that owns it.

A frozen layer's ``sign(x - b)`` is traced as ``Where(x >= 0, 1, -1)``; the
exporter calls the tensor ``where_7``. Renaming it ``<layer>/sign`` (the
module path, e.g. ``layer1.0.conv2/sign``) lets the layer-by-layer parity
check (:mod:`irconvert.export.parity`) find each layer's bits in onnxruntime
and OpenVINO, and shows users the layer in an engine's profile.

The exporter traces the model in Python execution order, so the k-th sign
node of the graph belongs to the k-th binary-activation layer called. The
names are given only when the counts agree (a model whose own code uses the
same ``Where`` pattern is left as traced).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.export.freeze import FrozenBinaryLayer

__all__ = ["SIGN_SUFFIX", "binary_call_order", "name_signs", "sign_layer"]

SIGN_SUFFIX = "/sign"


def binary_call_order(frozen: nn.Module, x: Tensor) -> list[str]:
    """Names of the binary-activation layers in the order ``frozen(x)`` calls them.

    A layer called twice appears twice, the second time as ``name#2``.
    """
    order: list[str] = []
    seen: Counter[str] = Counter()

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: Any) -> None:
            seen[name] += 1
            order.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in frozen.named_modules()
               if isinstance(m, FrozenBinaryLayer) and m.binary_act]
    try:
        with torch.no_grad():
            frozen(x)
    finally:
        for handle in handles:
            handle.remove()
    return order


def sign_layer(tensor_name: str) -> str | None:
    """The layer a ``<layer>/sign`` tensor name belongs to, else None."""
    return tensor_name[: -len(SIGN_SUFFIX)] if tensor_name.endswith(SIGN_SUFFIX) else None


def _constants(graph: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Cast" and node.input[0] in values:  # the dynamo exporter's 0
            values[node.output[0]] = values[node.input[0]]
    return values


def _is_sign(node: Any, producers: dict[str, Any], constants: dict[str, Any]) -> bool:
    """``Where(GreaterOrEqual(x, 0), 1, -1)``, as :func:`sign_activation` traces."""
    if node.op_type != "Where" or len(node.input) != 3:
        return False
    cond = producers.get(node.input[0])
    one, minus = constants.get(node.input[1]), constants.get(node.input[2])
    if cond is None or cond.op_type != "GreaterOrEqual" or one is None or minus is None:
        return False
    zero = constants.get(cond.input[1])
    return (zero is not None and zero.size == 1 and float(zero) == 0
            and one.size == 1 and float(one) == 1 and minus.size == 1 and float(minus) == -1)


def name_signs(proto: Any, layers: list[str]) -> int:
    """Rename the sign tensors of ``proto`` (in place) after ``layers``; how many.

    0 when the graph's sign nodes and ``layers`` differ in number.
    """
    graph = proto.graph
    producers = {out: node for node in graph.node for out in node.output}
    constants = _constants(graph)
    signs = [node for node in graph.node if _is_sign(node, producers, constants)]
    if len(signs) != len(layers):
        return 0
    renames = {node.output[0]: layer + SIGN_SUFFIX
               for node, layer in zip(signs, layers, strict=True)}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for info in list(graph.value_info) + list(graph.output):
        info.name = renames.get(info.name, info.name)
    return len(renames)
