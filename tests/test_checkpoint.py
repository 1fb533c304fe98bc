"""Exact weight bytes from safetensors headers of a local snapshot folder."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from provisioner.core.catalog import resolve_model
from provisioner.core.memory import weights_total_bytes
from provisioner.core.quant import resolve_quant
from provisioner.errors import ConfigError

CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 100,
    "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> int:
    """A real safetensors file (header + zero bytes); returns the data size."""
    sizes = {"BF16": 2, "F32": 4, "I32": 4, "U8": 1}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return offset


def snapshot(tmp_path: Path, sharded: bool) -> int:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    t: dict[str, tuple[str, list[int]]] = {"model.embed_tokens.weight": ("BF16", [100, 64])}
    for i in range(2):
        p = f"model.layers.{i}"
        t[f"{p}.self_attn.q_proj.weight"] = ("BF16", [64, 64])
        t[f"{p}.self_attn.k_proj.weight"] = ("BF16", [32, 64])
        t[f"{p}.self_attn.v_proj.weight"] = ("BF16", [32, 64])
        t[f"{p}.self_attn.o_proj.weight"] = ("BF16", [64, 64])
        t[f"{p}.mlp.gate_proj.weight"] = ("BF16", [128, 64])
        t[f"{p}.mlp.up_proj.weight"] = ("BF16", [128, 64])
        t[f"{p}.mlp.down_proj.weight"] = ("BF16", [64, 128])
        t[f"{p}.input_layernorm.weight"] = ("BF16", [64])
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", [64])
    t["model.norm.weight"] = ("BF16", [64])
    t["lm_head.weight"] = ("F32", [100, 64])  # stored wider than the config says: exact wins
    if not sharded:
        return write_safetensors(tmp_path / "model.safetensors", t)
    names = list(t)
    half = len(names) // 2
    parts = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    total = 0
    for fname, keys in parts.items():
        total += write_safetensors(tmp_path / fname, {k: t[k] for k in keys})
    index = {
        "metadata": {"total_size": total},
        "weight_map": {k: f for f, ks in parts.items() for k in ks},
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    return total


@pytest.mark.parametrize("sharded", [False, True])
def test_folder_weights_are_the_safetensors_bytes(tmp_path: Path, sharded: bool) -> None:
    data = snapshot(tmp_path, sharded)
    spec = resolve_model(str(tmp_path))
    scheme = resolve_quant("auto", spec)
    # config arithmetic would say (params x 2 B); the f32 lm_head makes the file 12,800 B more
    from_config = resolve_model(str(tmp_path / "config.json"))
    assert weights_total_bytes(spec, scheme) == data
    assert (
        data == weights_total_bytes(from_config, resolve_quant("auto", from_config)) + 100 * 64 * 2
    )


def test_missing_shard_is_a_clear_error(tmp_path: Path) -> None:
    snapshot(tmp_path, sharded=True)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConfigError, match="missing"):
        resolve_model(str(tmp_path))


def test_garbage_header_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(ConfigError, match="safetensors header"):
        resolve_model(str(tmp_path))


def _patch_header(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    fn(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


@pytest.mark.parametrize(
    "lie, message",
    [
        (lambda h: h["lm_head.weight"].update(data_offsets=[0, 10**12]), "impossible offsets"),
        (lambda h: h["lm_head.weight"].update(data_offsets=[-4, 8]), "impossible offsets"),
        (lambda h: h["model.norm.weight"].update(shape=[65]), "offsets span"),
        (
            lambda h: h["model.norm.weight"].update(
                data_offsets=[
                    h["lm_head.weight"]["data_offsets"][0],
                    h["lm_head.weight"]["data_offsets"][0] + 128,
                ]
            ),
            "overlap",
        ),
        (lambda h: h["lm_head.weight"].update(data_offsets="0-8"), "data_offsets"),
    ],
)
def test_lying_headers_exit_2(tmp_path: Path, lie, message: str) -> None:  # type: ignore[no-untyped-def]
    snapshot(tmp_path, sharded=False)
    _patch_header(tmp_path / "model.safetensors", lie)
    with pytest.raises(ConfigError, match=message):
        resolve_model(str(tmp_path))


def test_partial_snapshot_without_index_exits_2(tmp_path: Path) -> None:
    snapshot(tmp_path, sharded=True)
    (tmp_path / "model.safetensors.index.json").unlink()
    (tmp_path / "model-00002-of-00002.safetensors").unlink()  # half the weights never arrived
    with pytest.raises(ConfigError, match="partial download"):
        resolve_model(str(tmp_path))


def test_a_snapshot_somewhat_off_the_config_warns_loudly(tmp_path: Path) -> None:
    # the F32 lm_head adds 12,800 B to ~172 kB the config describes: +7%, a warning not an error
    snapshot(tmp_path, sharded=False)
    spec = resolve_model(str(tmp_path))
    assert any(n.startswith("WARNING:") and "+7." in n for n in spec.notes), spec.notes


@pytest.mark.parametrize("weight_map", [["a"], {"x": "../outside.safetensors"}, {"x": 3}])
def test_index_that_points_outside_or_is_malformed_exits_2(tmp_path: Path, weight_map) -> None:  # type: ignore[no-untyped-def]
    snapshot(tmp_path, sharded=True)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ConfigError, match="weight_map"):
        resolve_model(str(tmp_path))
