"""Fuzz: Hugging Face snapshot folders whose safetensors headers are partial, lying or cut."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from fuzz_harness import QUOTE, base_config, clean, refused, run, write_config

GIB = 2**30


def _safetensors(header: Any, body: bytes = b"", declared: int | None = None) -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw) if declared is None else declared) + raw + body


def _snapshot(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "snap"
    write_config(folder, base_config())
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _tensor(dtype: str, shape: list[int], start: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


EMBED = "model.embed_tokens.weight"
CASES: list[tuple[str, dict[str, bytes], tuple[str, ...]]] = [
    ("shorter-than-8-bytes", {"model.safetensors": b"\x01\x02"}, ("safetensors",)),
    ("empty-file", {"model.safetensors": b""}, ("safetensors",)),
    (
        "header-longer-than-file",
        {"model.safetensors": _safetensors({}, declared=4096)},
        ("safetensors",),
    ),
    ("header-length-2^63", {"model.safetensors": _safetensors({}, declared=2**63)}, ("header",)),
    ("header-length-zero", {"model.safetensors": _safetensors({}, declared=0)}, ("header",)),
    ("header-not-json", {"model.safetensors": _safetensors(b"{not json")}, ("header",)),
    ("header-not-utf8", {"model.safetensors": _safetensors(b'{"\xff\xfe": 1}')}, ("header",)),
    ("header-a-list", {"model.safetensors": _safetensors([1, 2, 3])}, ("header",)),
    (
        "tensor-not-an-object",
        {"model.safetensors": _safetensors({EMBED: "big"})},
        ("tensor",),
    ),
    (
        "no-data-offsets",
        {"model.safetensors": _safetensors({EMBED: {"dtype": "BF16", "shape": [1, 1]}})},
        ("data_offsets",),
    ),
    (
        "string-offsets",
        {
            "model.safetensors": _safetensors(
                {EMBED: _tensor("BF16", [1], 0, 2) | {"data_offsets": ["a", "b"]}}
            )
        },
        ("data_offsets",),
    ),
    (
        "negative-size",
        {"model.safetensors": _safetensors({EMBED: _tensor("BF16", [1], 100, 0)}, b"\0" * 100)},
        ("offsets",),
    ),
    (
        "offsets-beyond-the-file",  # a lying header: 16 GiB of tensor in a few bytes of file
        {"model.safetensors": _safetensors({EMBED: _tensor("BF16", [128256, 65536], 0, 16 * GIB)})},
        ("safetensors",),
    ),
    (
        "shape-disagrees-with-offsets",  # 4096 x 4096 BF16 is 32 MiB, not 8 bytes
        {
            "model.safetensors": _safetensors(
                {EMBED: _tensor("BF16", [4096, 4096], 0, 8)}, b"\0" * 8
            )
        },
        ("shape",),
    ),
    (
        "index-not-json",
        {"model.safetensors.index.json": b"{oops"},
        ("index",),
    ),
    (
        "index-weight-map-a-list",
        {"model.safetensors.index.json": json.dumps({"weight_map": [1]}).encode()},
        ("index",),
    ),
    (
        "index-names-a-missing-shard",
        {
            "model.safetensors.index.json": json.dumps(
                {"weight_map": {EMBED: "model-00001-of-00004.safetensors"}}
            ).encode()
        },
        ("missing",),
    ),
    (
        "index-escapes-the-folder",
        {
            "model.safetensors.index.json": json.dumps(
                {"weight_map": {EMBED: "../../etc/passwd"}}
            ).encode()
        },
        ("index",),
    ),
]


@pytest.mark.parametrize(("files", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_snapshot_headers(tmp_path: Path, files: dict[str, bytes], words: tuple[str, ...]) -> None:
    refused(run(*QUOTE, "--model", _snapshot(tmp_path, files)), *words)


def test_partial_snapshot_is_not_quoted_as_a_small_model(tmp_path: Path) -> None:
    """An 8B model's folder holding one small shard (the rest still downloading) must not be
    quoted at the shard's size: refused, naming what is missing."""
    n = 128256 * 4096 * 2  # the embedding only: ~1 GB of the ~16 GB of weights
    header = {EMBED: _tensor("BF16", [128256, 4096], 0, n)}
    shard = _safetensors(header)
    folder = _snapshot(tmp_path, {"model-00001-of-00004.safetensors": shard})
    # a sparse file: the header's byte range exists without writing 1 GB
    with (folder / "model-00001-of-00004.safetensors").open("r+b") as f:
        f.truncate(len(shard) + n)
    result = run(*QUOTE, "--model", folder, "--top", "1")
    clean(result)
    if result.exit_code == 0:  # allowed only if the weights are the whole model's
        doc = json.loads(result.stdout)
        assert doc["model"]["weight_bytes"] > 0.9 * 8.0e9 * 2, doc["model"]
    else:
        refused(result, "partial")
