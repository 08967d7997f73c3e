"""The packed ``.irc`` format: 1 bit per binary weight, in a safetensors file.

Tensors (safetensors, little-endian):

- ``bits`` (uint8): every binary layer's weight signs, 8 per byte, layer after
  layer in the order of the ``layers`` metadata, each layer starting on a
  byte boundary. Within a layer the weight is flattened row-major and element
  ``i`` is bit ``i % 8`` (LSB first) of byte ``i // 8``; 1 means +1, 0 means -1
  (see :mod:`irconvert.export.bits`).
- ``exponents`` (int8): one per binary output channel, layer after layer;
  the Libra-PB scale is ``2 ** exponent`` (-128 stands for a scale of 0: a
  channel whose latent weights are all equal).
- ``params`` (float32): every other floating-point tensor of the model
  (full-precision layers, binary-layer biases, BatchNorm weights and running
  statistics) flattened and concatenated in the order of the ``params``
  metadata. They are stored as they are (fp32), not quantized.
  This includes each learnt activation threshold (``<layer>.act_threshold``,
  one per input channel of a binary layer that has one) and the
  ``shift_in``/``slope``/``shift_out`` of every RPReLU, so the signs and
  activations of the loaded model are bit-for-bit the source model's.
- any non-float tensor (an integer buffer) under its own state_dict name.

The training-only ``num_batches_tracked`` counters and EDE ``ede_t``/``ede_k``
are dropped. One blob per kind (instead of one safetensors entry per tensor)
keeps the file within a fraction of a percent of the theoretical minimum
even for small models, where a per-tensor index would add ~10 %.

Metadata (the safetensors header's ``__metadata__``, all values strings):
``format`` (``irconvert-packed``), ``format_version``, ``arch``,
``num_classes``, ``binarize`` (BinarizeConfig dict as JSON), ``layers`` (JSON:
binary layer name -> kind, constructor arguments and weight ``shape``, in
blob order; ``"act_threshold": true`` on layers with a threshold), ``params``
(JSON list of ``[state_dict key, shape]`` in blob order), ``bit_order``
(``little``), ``irconvert_version``, and, when known, ``preprocessing``
(JSON: the input normalisation, input size and eval resize/crop the model
was trained with; see :mod:`irconvert.export.meta`), and ``sha256``: the
digest of the header (tensor index and metadata, without this key, as
compact sorted JSON) followed by every tensor byte. Loading checks it, so a
flipped bit anywhere in the file is a one-line error naming the file, not a
model that silently predicts something else; files written before the digest
have none and load as before.

Loading rebuilds the model by architecture name (``build_model`` +
``binarize_`` with the stored config, whose ``block_act`` brings back the
RPReLU modules), swaps each binary layer for a frozen one and fills it from
the bits: the logits equal the source model's.

Versions: a file with activation thresholds or RPReLU is format version 2,
so an irconvert that cannot rebuild them says "upgrade" instead of failing
on a tensor name. Any other file is written as version 1, as before: the
``binarize`` fields added with version 2 (``act_threshold``, ``block_act``)
are left out at their defaults, and a file without them reads as having the
defaults (no thresholds, Hardtanh).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.atomic import atomic_file
from irconvert.config import BinarizeConfig
from irconvert.errors import ExportError, IRConvertError, LoadError
from irconvert.export.bits import BIT_ORDER, packed_nbytes, unpack_signs
from irconvert.export.freeze import (
    FrozenBinaryLayer,
    _set_submodule,
    as_frozen,
    binary_layers,
    layer_from_config,
    scales_of,
)
from irconvert.export.meta import IRC_KEY, check_metadata, decode_metadata, encode_metadata
from irconvert.export.packed_file import (
    AGAIN,
    DIGEST_KEY,
    PackedInfo,
    PackedSize,
    TensorRow,
    payload_digest,
    read_header,
)
from irconvert.outputs import check_output

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "describe_packed",
    "load_packed",
    "open_packed",
    "save_packed",
]

FORMAT = "irconvert-packed"
FORMAT_VERSION = 2
_PLAIN_VERSION = 1  # what a file without thresholds or RPReLU is written as
# BinarizeConfig fields that version 1 files never hold, with their defaults.
_V2_FIELDS: dict[str, Any] = {"act_threshold": False, "block_act": "hardtanh"}
_DROPPED = ("num_batches_tracked", "ede_t", "ede_k")
_BITS, _EXP, _PARAMS = "bits", "exponents", "params"


def _tensors_and_meta(
    frozen: nn.Module, arch: str, num_classes: int, config: BinarizeConfig,
    preprocessing: dict[str, Any] | None = None,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    layers = binary_layers(frozen)
    owned = {f"{n}.{k}" for n in layers for k in ("sign", "scale")}
    records: dict[str, dict[str, Any]] = {}
    bits: list[Tensor] = []
    exponents: list[Tensor] = []
    for name, layer in layers.items():
        bits.append(torch.from_numpy(layer.packed_bits().copy()))
        exponents.append(layer.exponents())
        records[name] = {**layer.config(), "shape": list(layer.weight_shape)}  # type: ignore[operator]
    tensors: dict[str, Tensor] = {
        _BITS: torch.cat(bits) if bits else torch.zeros(0, dtype=torch.uint8),
        _EXP: torch.cat(exponents) if exponents else torch.zeros(0, dtype=torch.int8),
    }
    params: list[list[Any]] = []
    flat: list[Tensor] = []
    for key, tensor in frozen.state_dict().items():
        if key in owned or key.rsplit(".", 1)[-1] in _DROPPED:
            continue
        if tensor.is_floating_point():
            params.append([key, list(tensor.shape)])
            flat.append(tensor.detach().cpu().float().reshape(-1))
        else:
            tensors[key] = tensor.detach().cpu().contiguous().clone()
    tensors[_PARAMS] = torch.cat(flat) if flat else torch.zeros(0)
    from irconvert.version import __version__

    binarize = _binarize_record(config)
    version = _version_needed(frozen, layers, binarize)
    meta = {
        "format": FORMAT, "format_version": str(version), "arch": arch,
        "num_classes": str(num_classes), "binarize": _compact(binarize),
        "layers": _compact(records), "params": _compact(params),
        "bit_order": BIT_ORDER, "irconvert_version": __version__,
    }
    if preprocessing:
        meta[IRC_KEY] = encode_metadata(preprocessing)
    return tensors, meta


def _has_rprelu(model: nn.Module) -> bool:
    from irconvert.nn import RPReLU

    return any(isinstance(m, RPReLU) for m in model.modules())


def _binarize_record(config: BinarizeConfig) -> dict[str, Any]:
    """``config.to_dict()`` without version-2 fields at their defaults."""
    return {k: v for k, v in config.to_dict().items()
            if not (k in _V2_FIELDS and v == _V2_FIELDS[k])}


def _with_defaults(binarize: Any) -> Any:
    """A stored ``binarize`` record with the version-2 fields it left out."""
    if not isinstance(binarize, dict):  # damaged: BinarizeConfig.from_dict says so
        return binarize
    return {**binarize, **{k: v for k, v in _V2_FIELDS.items() if k not in binarize}}


def _version_needed(frozen: nn.Module, layers: dict[str, FrozenBinaryLayer],
                    binarize: dict[str, Any]) -> int:
    if (_has_rprelu(frozen) or any(layer.has_threshold for layer in layers.values())
            or any(k in binarize for k in _V2_FIELDS)):
        return FORMAT_VERSION
    return _PLAIN_VERSION


def _check_config(frozen: nn.Module, config: BinarizeConfig) -> None:
    # Loading re-runs binarize_ with ``config``: without block_act="rprelu" the
    # rebuilt model has Hardtanh where these RPReLU parameters belong.
    if _has_rprelu(frozen) and config.block_act != "rprelu":
        raise ExportError("the model has RPReLU activations but its BinarizeConfig says "
                          f"block_act={config.block_act!r}; pass the config it was "
                          "converted with (block_act='rprelu')")


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def save_packed(
    model: nn.Module, path: str | os.PathLike[str], *, arch: str | None, num_classes: int,
    config: BinarizeConfig, force: bool = False, metadata: dict[str, Any] | None = None,
) -> PackedSize:
    """Write a binarized (or frozen) model as a packed ``.irc`` file.

    Args:
        model: a model converted by :func:`irconvert.binarize_` with ``config``.
        path: output file; written to a temporary file and renamed into place.
        arch: the registry name the model is rebuilt from when loading.
        num_classes: classifier size.
        config: the BinarizeConfig the model was converted with.
        force: overwrite an existing file.
        metadata: the input preprocessing to record (``normalization``,
            ``input_size``, ``eval_resize``, ``eval_crop``; see
            :mod:`irconvert.export.meta`); None records none.

    Returns:
        The file's :class:`PackedSize`.

    Raises:
        ExportError: no architecture name, no binarized layer, bad metadata,
            RPReLU activations with a config that does not rebuild them, or
            the output exists.
    """
    from safetensors.torch import save_file

    out = check_output(path, force)
    if not arch:
        raise ExportError("the packed format rebuilds the model by architecture name, "
                          "and this model has none; export to onnx or openvino instead")
    preprocessing = check_metadata(metadata)
    frozen = as_frozen(model)
    _check_config(frozen, config)
    tensors, meta = _tensors_and_meta(frozen, arch, num_classes, config, preprocessing)
    with atomic_file(out) as tmp:
        # the digest covers the tensor index, which safetensors makes: write,
        # hash, write again with the digest (the tensor bytes stay the same)
        save_file(tensors, str(tmp), metadata=meta)
        length, header = read_header(tmp, verify=False)
        with tmp.open("rb") as fh:
            fh.seek(8 + length)
            digest = payload_digest(header, fh.read())
        save_file(tensors, str(tmp), metadata={**meta, DIGEST_KEY: digest})
    return describe_packed(out).size


def _check_layers(path: Path, layers: Any, params: Any) -> None:
    ok = isinstance(layers, dict) and all(
        isinstance(r, dict) and isinstance(r.get("shape"), list) and r["shape"]
        and all(isinstance(d, int) and d > 0 for d in r["shape"]) for r in layers.values())
    ok = ok and isinstance(params, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
        and isinstance(p[1], list) and all(isinstance(d, int) and d >= 0 for d in p[1])
        for p in params)
    if not ok:
        raise LoadError(f"{path}: damaged packed-model metadata (layer or parameter "
                        f"index); {AGAIN}")


def describe_packed(path: str | os.PathLike[str]) -> PackedInfo:
    """Read a ``.irc`` file's metadata, a per-tensor table and the size accounting.

    ``tensors`` lists each logical tensor (a binary layer's bits and
    exponents, every full-precision tensor) with the bytes it takes.

    Raises:
        LoadError: the file is missing, empty, truncated or otherwise damaged,
            not safetensors, or not an irconvert packed file.
    """
    p = Path(path)
    if p.is_dir():
        raise LoadError(f"{p}: a directory, not an .irc file")
    if not p.is_file():
        raise LoadError(f"{p}: no such file")
    _, header = read_header(p)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LoadError(f"{p}: not an irconvert packed model (no '{FORMAT}' marker)")
    try:
        version = int(meta.get("format_version", "0"))
    except ValueError:
        raise LoadError(f"{p}: damaged packed-model metadata (format_version "
                        f"{meta.get('format_version')!r})") from None
    if version > FORMAT_VERSION:
        raise LoadError(f"{p}: packed format version {version} is newer than this irconvert "
                        f"understands ({FORMAT_VERSION}); upgrade irconvert")
    try:
        layers: dict[str, dict[str, Any]] = json.loads(meta["layers"])
        params: list[list[Any]] = json.loads(meta["params"])
        info = PackedInfo(path=str(p), arch=meta["arch"], num_classes=int(meta["num_classes"]),
                          format_version=version,
                          binarize=_with_defaults(json.loads(meta["binarize"])),
                          layers=layers, preprocessing=decode_metadata(meta.get(IRC_KEY), p),
                          sha256=meta.get(DIGEST_KEY))
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(f"{p}: damaged packed-model metadata ({exc})") from None
    _check_layers(p, layers, params)
    size = info.size
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        if name == _BITS:
            size.bits = end - start
        elif name == _EXP:
            size.exponents = end - start
        else:
            size.floats += end - start
            if name != _PARAMS:
                info.tensors.append(TensorRow(name, entry["dtype"], list(entry["shape"]),
                                              end - start))
    for name, record in layers.items():
        shape = record["shape"]
        info.tensors.append(TensorRow(f"{name}.weight (bits)", "U1", shape,
                                      packed_nbytes(math.prod(shape))))
        info.tensors.append(TensorRow(f"{name}.weight (exponents)", "I8", [shape[0]], shape[0]))
    for key, shape in params:
        info.tensors.append(TensorRow(key, "F32", list(shape), 4 * math.prod(shape)))
    size.metadata = len(json.dumps(meta, separators=(",", ":")).encode())
    size.index = p.stat().st_size - size.theoretical
    return info


def load_packed(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a runnable eval-mode model from a ``.irc`` file.

    The model is built by architecture name, binarized with the stored config,
    and its binary layers are replaced by frozen layers filled from the bits;
    its outputs equal the exported model's.

    Raises:
        LoadError: unreadable file, unknown architecture, or tensors that do not fit it.
    """
    return open_packed(path)[0]


def open_packed(path: str | os.PathLike[str]) -> tuple[nn.Module, PackedInfo]:
    """:func:`load_packed` and :func:`describe_packed` of ``path``, reading it once."""
    from safetensors import safe_open

    from irconvert.convert import binarize_
    from irconvert.models import build_model

    info = describe_packed(path)
    try:
        config = BinarizeConfig.from_dict(info.binarize)
        model = build_model(info.arch, num_classes=info.num_classes)
    except IRConvertError as exc:  # a damaged or foreign record: say which file
        raise LoadError(f"{path}: {exc}") from None
    binarize_(model, config, warn=False, layers=set(info.layers))
    try:
        with safe_open(str(path), framework="pt") as fh:  # type: ignore[no-untyped-call]
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # SafetensorError, OSError: the header checks passed, the rest did not
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise LoadError(f"{path}: damaged .irc file ({first}); {AGAIN}") from None
    meta_params: list[list[Any]] = json.loads(read_header(Path(path))[1]["__metadata__"]["params"])
    try:
        bits, exps, flat = tensors.pop(_BITS), tensors.pop(_EXP), tensors.pop(_PARAMS)
        state = _split_params(flat, meta_params)
    except (KeyError, ValueError) as exc:
        raise LoadError(f"{path}: damaged packed model ({exc})") from None
    state.update(tensors)
    modules = dict(model.named_modules())
    byte, channel = 0, 0
    for name, record in info.layers.items():
        if name not in modules:
            raise LoadError(f"{path}: binary layer {name!r} does not exist in {info.arch}")
        shape = record["shape"]
        nbytes = packed_nbytes(math.prod(shape))
        try:
            frozen = layer_from_config({k: v for k, v in record.items() if k != "shape"})
            sign = unpack_signs(bits[byte:byte + nbytes].numpy(), shape)
            scale = scales_of(exps[channel:channel + shape[0]])
            frozen._load_frozen(sign, scale, state.pop(f"{name}.bias", None))
        except (KeyError, TypeError, ValueError, RuntimeError, ExportError) as exc:
            raise LoadError(f"{path}: binary layer {name!r} is damaged ({exc})") from None
        byte, channel = byte + nbytes, channel + shape[0]
        _set_submodule(model, name, frozen)
    if byte != bits.numel() or channel != exps.numel():
        raise LoadError(f"{path}: bit or exponent count does not match the layer shapes")
    result = model.load_state_dict(state, strict=False)
    frozen_keys = {f"{n}.{k}" for n in info.layers for k in ("sign", "scale", "bias")}
    missing = [k for k in result.missing_keys
               if k not in frozen_keys and k.rsplit(".", 1)[-1] not in _DROPPED]
    if missing or result.unexpected_keys:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {result.unexpected_keys[0]!r}"
        raise LoadError(f"{path}: tensors do not fit {info.arch} ({what})")
    return model.eval(), info


def _split_params(flat: Tensor, index: list[list[Any]]) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    offset = 0
    for key, shape in index:
        n = math.prod(shape)
        if offset + n > flat.numel():
            raise ValueError("params blob shorter than its index")
        state[key] = flat[offset:offset + n].reshape(shape)
        offset += n
    if offset != flat.numel():
        raise ValueError("params blob longer than its index")
    return state

