"""Plausibility of a local snapshot's safetensors files before their bytes are counted.

provisioner/core/checkpoint.py sums the byte ranges the headers declare. A header is user input: it
may be cut short, declare ranges past the end of its file or backwards, disagree with its own
shape and dtype, or belong to a snapshot still downloading (model-00001-of-00004 alone). Each
of those would be quoted as a confident, wrong weight size; here they are refused with a
ConfigError naming the file and what is wrong. Reads headers only (kilobytes).
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

from provisioner.errors import ConfigError

MAX_HEADER = 100 * 1024 * 1024
#: bytes per element of the safetensors dtypes (huggingface/safetensors' Dtype enum)
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_SHARD = re.compile(r"-(\d+)-of-(\d+)\.safetensors$")


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """(header, bytes of tensor data after it), or ConfigError."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ConfigError(f"{path}: {size} bytes is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if not 0 < n <= min(MAX_HEADER, size - 8):
            raise ConfigError(
                f"{path}: safetensors header length {n} does not fit the file's {size} bytes "
                "(truncated or not a safetensors file)"
            )
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ConfigError(f"{path}: safetensors header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: safetensors header is not a JSON object")
    return header, size - 8 - n


def _check_tensor(path: Path, name: str, info: Any, data_bytes: int) -> None:
    where = f"{path}: tensor {name!r}"
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise ConfigError(f"{where}: data_offsets must be [start, end] with 0 <= start <= end")
    start, end = offsets
    if end > data_bytes:
        raise ConfigError(
            f"{where}: data_offsets end at byte {end:,} but the file holds {data_bytes:,} bytes "
            "of tensors (a truncated file or a header that does not describe it)"
        )
    shape, dtype = info.get("shape"), info.get("dtype")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ConfigError(f"{where}: shape must be a list of sizes >= 0")
    width = DTYPE_BYTES.get(str(dtype))
    if width is not None and math.prod(shape) * width != end - start:
        raise ConfigError(
            f"{where}: shape {shape} x {dtype} is {math.prod(shape) * width:,} bytes but "
            f"data_offsets span {end - start:,}"
        )


def _index_files(folder: Path) -> list[Path] | None:
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise ConfigError(f"{index}: not a safetensors index ({type(e).__name__})") from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(v, str) and v and Path(v).name == v for v in weight_map.values()
    ):
        raise ConfigError(f"{index}: weight_map must map tensor names to shard file names")
    return sorted({folder / v for v in weight_map.values()})


def check_snapshot(folder: Path) -> None:
    """Refuse a snapshot whose safetensors headers cannot be the weights they claim."""
    files = _index_files(folder)
    if files is None:
        files = sorted(folder.glob("*.safetensors"))
    missing = [f.name for f in files if not f.is_file()]
    for f in files:
        m = _SHARD.search(f.name)
        if m:  # model-00001-of-00004.safetensors: the others must be here too
            total = int(m.group(2))
            stem = f.name[: m.start()]
            for i in range(1, min(total, 10_000) + 1):
                name = f"{stem}-{i:05d}-of-{m.group(2)}.safetensors"
                if not (folder / name).is_file() and name not in missing:
                    missing.append(name)
    if missing:
        raise ConfigError(
            f"{folder}: a partial snapshot: {len(missing)} shard(s) missing "
            f"({', '.join(sorted(missing)[:3])}); finish the download first"
        )
    for f in files:
        try:
            header, data_bytes = _header(f)
        except OSError as e:
            raise ConfigError(f"{f}: cannot read ({e.strerror or e})") from None
        header.pop("__metadata__", None)
        for name, info in header.items():
            _check_tensor(f, name, info, data_bytes)
