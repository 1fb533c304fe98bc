"""Exact weight bytes from a local Hugging Face snapshot's safetensors headers.

A safetensors file starts with an 8-byte little-endian header length and a JSON header that
maps each tensor to its dtype, shape and byte range; reading headers costs kilobytes, not the
hundreds of GB behind them. Tensor names are bucketed into the same (kind, layer) groups the
config parser builds, so the memory model keeps its sharding rules but uses exact bytes.
"""

from __future__ import annotations

import json
import re
import struct
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from provisioner.errors import ConfigError
from provisioner.models import Kind, ModelSpec, TpLayout, WeightGroup

_LAYER = re.compile(r"layers\.(\d+)\.")
_MAX_HEADER = 100 * 1024 * 1024


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
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    return header


def tensor_bytes(folder: Path) -> dict[str, int]:
    """Tensor name -> bytes for every tensor of the snapshot in `folder`."""
    files = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{index}: not a safetensors index ({e})") from None
        files = sorted({folder / str(name) for name in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ConfigError(
                f"{index}: shard(s) missing from the folder: {', '.join(missing[:3])}"
            )
    sizes: dict[str, int] = {}
    for f in files:
        for name, info in read_header(f).items():
            offsets = info.get("data_offsets") if isinstance(info, dict) else None
            if not (isinstance(offsets, list) and len(offsets) == 2):
                raise ConfigError(f"{f}: tensor {name!r} has no data_offsets")
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
    total = sum(sizes.values())
    return replace(
        spec,
        groups=tuple(groups),
        notes=(*spec.notes, f"weights read from safetensors headers: {total / 1e9:.2f} GB"),
    )
