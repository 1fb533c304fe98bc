"""Exact weight bytes from a local Hugging Face snapshot's safetensors headers.

A safetensors file starts with an 8-byte little-endian header length and a JSON header that
maps each tensor to its dtype, shape and byte range; reading headers costs kilobytes, not the
hundreds of GB behind them. Tensor names are bucketed into the same (kind, layer) groups the
config parser builds, so the memory model keeps its sharding rules but uses exact bytes.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from provisioner.core.models import ModelSpec
from provisioner.core.weights import Kind, TpLayout, WeightGroup
from provisioner.errors import ConfigError

_LAYER = re.compile(r"layers\.(\d+)\.")
_MAX_HEADER = 100 * 1024 * 1024
# Bytes per element of safetensors dtypes (sub-byte and unknown dtypes skip the shape check).
_DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
# Snapshot total vs the config's estimate: beyond WARN a loud note, beyond FAIL exit 2.
WARN_OFF = 0.03
FAIL_OFF = 0.25


def read_header(path: Path) -> dict[str, dict[str, object]]:
    """The JSON header of one .safetensors file (without reading the tensors)."""
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ConfigError(f"{path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n <= 0 or n > _MAX_HEADER:
                raise ConfigError(f"{path}: implausible safetensors header length {n}")
            header = json.loads(f.read(n))
        data_size = path.stat().st_size - 8 - n
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    _check_offsets(path, header, data_size)
    return header


def _check_offsets(path: Path, header: dict[str, object], data_size: int) -> None:
    """Offsets must be whole, ordered, non-overlapping, inside the file and match the shape."""
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ConfigError(f"{path}: tensor {name!r} is not described by an object")
        off = info.get("data_offsets")
        if not (
            isinstance(off, list)
            and len(off) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in off)
        ):
            raise ConfigError(f"{path}: tensor {name!r} has no valid data_offsets")
        begin, end = off
        if begin < 0 or end < begin or end > data_size:
            raise ConfigError(
                f"{path}: tensor {name!r} has impossible offsets [{begin}, {end}] for a data "
                f"section of {data_size} bytes (truncated or lying file)"
            )
        shape, dtype = info.get("shape"), info.get("dtype")
        per = _DTYPE_BYTES.get(str(dtype))
        if per and isinstance(shape, list) and all(isinstance(d, int) for d in shape):
            elems = 1
            for d in shape:
                elems *= d
            if elems * per != end - begin:
                raise ConfigError(
                    f"{path}: tensor {name!r} is {dtype}{shape} = {elems * per} bytes but its "
                    f"offsets span {end - begin}"
                )
        spans.append((begin, end, name))
    spans.sort()
    for (_b0, e0, n0), (b1, _e1, n1) in itertools.pairwise(spans):
        if b1 < e0:
            raise ConfigError(f"{path}: tensors {n0!r} and {n1!r} overlap")


def tensor_bytes(folder: Path) -> dict[str, int]:
    """Tensor name -> bytes for every tensor of the snapshot in `folder`."""
    files = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{index}: not a safetensors index ({e})") from None
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) and v and "/" not in v and "\\" not in v and v not in {".", ".."}
            for v in weight_map.values()
        ):
            raise ConfigError(f"{index}: weight_map must map tensor names to shard file names")
        files = sorted({folder / name for name in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ConfigError(
                f"{index}: shard(s) missing from the folder: {', '.join(missing[:3])}"
            )
    sizes: dict[str, int] = {}
    for f in files:
        for name, info in read_header(f).items():
            offsets = info["data_offsets"]
            assert isinstance(offsets, list)  # checked by read_header
            sizes[name] = int(offsets[1]) - int(offsets[0])
    return sizes


def classify(name: str) -> tuple[Kind, int | None]:
    """Which (kind, layer) group a tensor belongs to, from its name."""
    m = _LAYER.search(name)
    layer = int(m.group(1)) if m else None
    if any(k in name for k in ("vision", "visual", "multi_modal_projector", "mm_projector")):
        return "vision", None
    if "embed_tokens" in name or name.endswith("wte.weight"):
        return "embed", None
    if "lm_head" in name:
        return "lm_head", None
    if layer is None:
        return "norm", None
    if "shared_expert" in name:
        return "shared_experts", layer
    if "experts" in name:
        return "experts", layer
    if "norm" in name or "sinks" in name:
        return "norm", layer
    if re.search(r"\.(gate|router)\.", name) or name.endswith((".gate.weight", "router.weight")):
        return "router", layer
    if "self_attn" in name or "attention" in name:
        if any(k in name for k in ("q_a_proj", "kv_a_proj")):
            return "attn_latent", layer
        return "attn", layer
    return "dense_mlp", layer


def apply_checkpoint_bytes(spec: ModelSpec, folder: Path) -> ModelSpec:
    """The spec with exact_bytes filled from the folder's safetensors, if it has any."""
    sizes = tensor_bytes(folder)
    if not sizes:
        return spec
    buckets: dict[tuple[Kind, int | None], int] = defaultdict(int)
    for name, n in sizes.items():
        kind, layer = classify(name)
        if layer is not None and layer >= spec.num_layers:
            continue  # MTP / next-token-prediction layers: not loaded for serving
        buckets[(kind, layer)] += n
    groups: list[WeightGroup] = []
    seen: set[tuple[str, int | None]] = set()
    for g in spec.groups:
        key = (g.kind, g.layer)
        if key in seen:  # two groups of one kind in a layer: the first carries the bytes
            groups.append(replace(g, exact_bytes=0))
            continue
        seen.add(key)
        groups.append(replace(g, exact_bytes=buckets.pop(key, 0)))
    for (kind, layer), n in buckets.items():  # tensors the config parser did not foresee
        tp: TpLayout = "replicate" if kind in {"norm", "router", "attn_latent"} else "shard"
        groups.append(
            WeightGroup(
                kind,
                layer,
                0,
                f"checkpoint.{kind}",
                tp,
                extra_params=n // 2,
                exact_bytes=n,
            )
        )
    total = sum(n for (_k, layer), n in _loaded(sizes, spec).items())
    notes = [f"weights read from safetensors headers: {total / 1e9:.2f} GB"]
    expected = _config_estimate(spec)
    off = (total - expected) / expected if expected else 0.0
    if abs(off) > FAIL_OFF:
        raise ConfigError(
            f"{folder}: the safetensors headers hold {total / 1e9:.2f} GB but config.json "
            f"describes ~{expected / 1e9:.2f} GB ({off:+.0%}): a partial download or a config "
            "that does not match the weights"
        )
    if abs(off) > WARN_OFF:
        notes.append(
            f"WARNING: the snapshot's {total / 1e9:.2f} GB differ from the config's "
            f"~{expected / 1e9:.2f} GB by {off:+.1%}; check the download and the config"
        )
    return replace(spec, groups=tuple(groups), notes=(*spec.notes, *notes))


def _loaded(sizes: dict[str, int], spec: ModelSpec) -> dict[tuple[str, int | None], int]:
    """Bytes vLLM loads, by (tensor name, layer): MTP layers beyond num_layers left out."""
    out: dict[tuple[str, int | None], int] = {}
    for name, n in sizes.items():
        _kind, layer = classify(name)
        if layer is None or layer < spec.num_layers:
            out[(name, layer)] = n
    return out


def _config_estimate(spec: ModelSpec) -> float:
    """What the config says the checkpoint weighs, in its own format."""
    from provisioner.core.quant import resolve_quant

    scheme = resolve_quant("auto", spec)
    return float(sum(scheme.group_bytes(g) for g in spec.groups if g.exact_bytes is None))
