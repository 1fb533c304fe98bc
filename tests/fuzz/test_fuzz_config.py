"""Fuzz: config.json values, types, encodings and sizes given to `prov quote --model PATH`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fuzz_harness import QUOTE, base_config, clean, refused, run, write_config

# (name, key, value, words the one-line error must contain); value _DROP removes the key
_DROP = object()
VALUES: list[tuple[str, str, Any, tuple[str, ...]]] = [
    ("nan-hidden", "hidden_size", float("nan"), ("NaN",)),
    ("inf-hidden", "hidden_size", float("inf"), ("Infinity",)),
    ("neg-inf-layers", "num_hidden_layers", float("-inf"), ("Infinity",)),
    ("str-hidden", "hidden_size", "4096", ("hidden_size",)),
    ("str-heads", "num_attention_heads", "32", ("num_attention_heads",)),
    ("word-kv-heads", "num_key_value_heads", "eight", ("num_key_value_heads",)),
    ("neg-hidden", "hidden_size", -4096, ("hidden_size",)),
    ("zero-layers", "num_hidden_layers", 0, ("num_hidden_layers",)),
    ("neg-vocab", "vocab_size", -1, ("vocab_size",)),
    ("zero-heads", "num_attention_heads", 0, ("num_attention_heads",)),
    ("zero-kv-heads", "num_key_value_heads", 0, ("num_key_value_heads",)),
    ("neg-kv-heads", "num_key_value_heads", -8, ("num_key_value_heads",)),
    ("float-hidden", "hidden_size", 4096.5, ("hidden_size",)),
    ("bool-hidden", "hidden_size", True, ("hidden_size",)),
    ("null-hidden", "hidden_size", None, ("hidden_size",)),
    ("list-hidden", "hidden_size", [4096], ("hidden_size",)),
    ("dict-hidden", "hidden_size", {"value": 4096}, ("hidden_size",)),
    ("missing-hidden", "hidden_size", _DROP, ("hidden_size",)),
    ("missing-layers", "num_hidden_layers", _DROP, ("num_hidden_layers",)),
    ("missing-vocab", "vocab_size", _DROP, ("vocab_size",)),
    ("missing-heads", "num_attention_heads", _DROP, ("num_attention_heads",)),
    ("zero-max-pos", "max_position_embeddings", 0, ("max_position_embeddings",)),
    ("neg-max-pos", "max_position_embeddings", -1, ("max_position_embeddings",)),
    ("neg-intermediate", "intermediate_size", -14336, ("intermediate_size",)),
    ("str-intermediate", "intermediate_size", "big", ("intermediate_size",)),
    ("zero-head-dim", "head_dim", 0, ("head_dim",)),
    ("neg-head-dim", "head_dim", -128, ("head_dim",)),
    ("unknown-model-type", "model_type", "not_a_model", ("model_type",)),
    ("number-model-type", "model_type", 42, ("model_type",)),
    ("quant-config-string", "quantization_config", "fp8", ("quantization_config",)),
    ("quant-config-list", "quantization_config", [1, 2], ("quantization_config",)),
    ("text-config-string", "text_config", "oops", ("text_config",)),
]


@pytest.mark.parametrize(
    ("key", "value", "words"), [v[1:] for v in VALUES], ids=[v[0] for v in VALUES]
)
def test_config_values(tmp_path: Path, key: str, value: Any, words: tuple[str, ...]) -> None:
    cfg = base_config()
    if key == "model_type":
        cfg.pop("architectures", None)
    if value is _DROP:
        cfg.pop(key, None)
    else:
        cfg[key] = value
    path = write_config(tmp_path / "m", json.dumps(cfg))  # allow_nan: NaN/Infinity literals
    refused(run(*QUOTE, "--model", path), *words)


def test_huge_layer_count_is_bounded(tmp_path: Path) -> None:
    """200 million layers once hung the quote: refused at once, naming the key."""
    cfg = base_config()
    cfg["num_hidden_layers"] = 200_000_000
    refused(run(*QUOTE, "--model", write_config(tmp_path / "m", cfg)), "num_hidden_layers")


def test_huge_hidden_size_is_bounded(tmp_path: Path) -> None:
    cfg = base_config()
    cfg["hidden_size"] = 10**15
    refused(run(*QUOTE, "--model", write_config(tmp_path / "m", cfg)), "hidden_size")


def test_huge_vocab_is_bounded(tmp_path: Path) -> None:
    cfg = base_config()
    cfg["vocab_size"] = 10**18
    refused(run(*QUOTE, "--model", write_config(tmp_path / "m", cfg)), "vocab_size")


def test_kv_heads_must_divide_heads(tmp_path: Path) -> None:
    cfg = base_config()
    cfg["num_key_value_heads"] = 5  # 32 query heads cannot share 5 KV heads
    refused(run(*QUOTE, "--model", write_config(tmp_path / "m", cfg)), "num_key_value_heads")


def test_more_kv_heads_than_heads(tmp_path: Path) -> None:
    cfg = base_config()
    cfg["num_key_value_heads"] = 64
    refused(run(*QUOTE, "--model", write_config(tmp_path / "m", cfg)), "num_key_value_heads")


MOE: list[tuple[str, str, Any]] = [
    ("nan-kv-lora", "kv_lora_rank", float("nan")),
    ("zero-experts", "n_routed_experts", 0),
    ("topk-above-experts", "num_experts_per_tok", 1000),
    ("neg-first-dense", "first_k_dense_replace", -5),
    ("zero-layer-freq", "moe_layer_freq", 0),
    ("str-moe-width", "moe_intermediate_size", "x"),
    ("neg-shared", "n_shared_experts", -1),
]


MOE_WORDS = {
    "kv_lora_rank": "NaN",
    "n_routed_experts": "experts",
    "num_experts_per_tok": "experts per token",
    "first_k_dense_replace": "dense",
    "moe_layer_freq": "moe_layer_freq",
    "moe_intermediate_size": "moe_intermediate_size",
    "n_shared_experts": "shared",
}


@pytest.mark.parametrize(("key", "value"), [m[1:] for m in MOE], ids=[m[0] for m in MOE])
def test_moe_config_values(tmp_path: Path, key: str, value: Any) -> None:
    cfg = base_config("moonshotai__Kimi-K2-Instruct")
    cfg[key] = value
    path = write_config(tmp_path / "m", json.dumps(cfg))
    # the parser's message may name the key or what it means (e.g. "experts per token")
    line = refused(run(*QUOTE, "--model", path, "--quant", "fp8"))
    assert key in line or MOE_WORDS[key] in line, line


# ---- the JSON document itself ------------------------------------------------------------

DOCS: list[tuple[str, bytes, tuple[str, ...]]] = [
    (
        "latin-1",
        json.dumps(base_config()).replace("llama", "llam\u00e1").encode("latin-1"),
        ("UTF-8",),
    ),
    ("utf-16", json.dumps(base_config()).encode("utf-16"), ("UTF-8",)),
    ("binary", bytes(range(256)) * 4, ("UTF-8",)),
    ("nul-bytes", b'{"hidden_size": 4096\x00\x00}', ("JSON",)),
    ("empty", b"", ("JSON",)),
    ("whitespace", b"   \n\t ", ("JSON",)),
    ("truncated", json.dumps(base_config()).encode()[:57], ("JSON",)),
    ("trailing-garbage", json.dumps(base_config()).encode() + b" xyz", ("JSON",)),
    ("comments", b'{\n  // a comment\n  "hidden_size": 4096\n}', ("JSON",)),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, ("JSON",)),
    ("top-level-list", b"[]", ("object",)),
    ("top-level-string", b'"config"', ("object",)),
    ("top-level-null", b"null", ("object",)),
    ("top-level-number", b"42", ("object",)),
    ("empty-object", b"{}", ("model_type",)),
    ("nan-literal", b'{"model_type": "llama", "hidden_size": NaN}', ("NaN",)),
]


@pytest.mark.parametrize(("raw", "words"), [d[1:] for d in DOCS], ids=[d[0] for d in DOCS])
def test_config_documents(tmp_path: Path, raw: bytes, words: tuple[str, ...]) -> None:
    refused(run(*QUOTE, "--model", write_config(tmp_path / "m", raw)), *words)


def test_utf8_bom_is_read(tmp_path: Path) -> None:
    """A byte-order mark is legal UTF-8 (editors on Windows write it): the config reads fine
    and answers like the same config without it."""
    raw = json.dumps(base_config()).encode()
    plain = run(*QUOTE, "--model", write_config(tmp_path / "a", raw), "--top", "1")
    bom = run(*QUOTE, "--model", write_config(tmp_path / "b", b"\xef\xbb\xbf" + raw), "--top", "1")
    clean(bom)
    assert bom.exit_code == 0 == plain.exit_code, bom.stderr
    assert (
        json.loads(bom.stdout)["plans"][0]["usd_per_hour"]
        == json.loads(plain.stdout)["plans"][0]["usd_per_hour"]
    )


def test_oversized_config_is_refused_quickly(tmp_path: Path) -> None:
    """A 'config.json' of many MB is not a config: refused by size, not parsed."""
    raw = b'{"model_type": "llama",' + b" " * (20 * 1024 * 1024) + b'"hidden_size": 1}'
    refused(run(*QUOTE, "--model", write_config(tmp_path / "m", raw)), "config.json", "MiB")


def test_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "snap").mkdir()
    refused(run(*QUOTE, "--model", tmp_path / "snap"), "config.json")


def test_missing_path(tmp_path: Path) -> None:
    refused(run(*QUOTE, "--model", tmp_path / "nope" / "config.json"), "no such file")


def test_config_json_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "m" / "config.json").mkdir(parents=True)
    refused(run(*QUOTE, "--model", tmp_path / "m" / "config.json"))


def test_every_catalog_config_passes_the_boundary_check() -> None:
    """The bounds refuse typos, not models: every config prov ships is within them."""
    from fuzz_harness import MODELS

    from provisioner.core.config_check import check_config

    for path in sorted(MODELS.glob("*.json")):
        check_config(json.loads(path.read_text()), path.name)
