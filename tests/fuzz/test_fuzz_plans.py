"""Fuzz: plan files given to `prov deploy --plan`, and the directories --render writes into."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from fuzz_harness import clean, failed, refused, run

QUOTE = [
    "quote",
    "--model",
    "meta-llama/Llama-3.1-70B",
    "--quant",
    "fp8",
    "--ctx",
    "32k",
    "--gpu",
    "nvidia",
    "--cloud",
    "aws",
    "--weights",  # today's download path: the render needs no bucket (s3: tests/stacks)
    "hub",
    "--layout",  # the hand edits below rewrite TP x PP plans (dense DP: tests/test_dense_dp.py)
    "tp",
    "--json",
]


@pytest.fixture(scope="module")
def plan_doc() -> dict[str, Any]:
    result = run(*QUOTE)
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["plans"][0]["deployable"] is True
    return doc


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def _render(plan: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run("deploy", "--plan", plan, "--render", out, *extra)


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    node: Any = d
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    if value is _DROP:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return d


_DROP = object()
MUTATIONS: list[tuple[str, str, Any, tuple[str, ...]]] = [
    ("schema-3", "schema_version", 3, ("schema_version 3", "newer prov")),
    ("schema-0", "schema_version", 0, ("schema_version 0", "older prov", "quote again")),
    ("schema-missing", "schema_version", _DROP, ("schema_version",)),
    ("schema-string", "schema_version", "1", ("schema_version",)),
    ("rank-string", "plans.0.rank", "1", ("rank",)),
    ("rank-zero", "plans.0.rank", 0, ("rank",)),
    ("tp-string", "plans.0.tp", "8", ("tp",)),
    ("tp-negative", "plans.0.tp", -8, ("tp",)),
    ("tp-float", "plans.0.tp", 8.0, ("tp",)),
    ("tp-pp-disagree", "plans.0.pp", 3, ("GPUs",)),
    ("plans-an-object", "plans", {"rank": 1}, ("plans",)),
    ("plans-empty", "plans", [], ("--rank 1",)),  # the headline's picks are still there
    ("headline-plans-a-string", "headline_plans", "x", ("headline_plans",)),
    ("price-negative", "plans.0.usd_per_hour", -1.0, ("usd_per_hour",)),
    ("market-reserved", "plans.0.market", "reserved", ("market",)),
    ("bad-date", "plans.0.prices_as_of", "2026-13-45", ("2026-13-45",)),
    ("model-missing", "model", _DROP, ("model",)),
    ("ctx-zero", "request.ctx", 0, ("ctx",)),
    ("memory-missing", "plans.0.memory_gib_per_gpu", _DROP, ("memory_gib_per_gpu",)),
    ("vllm-args-a-string", "plans.0.vllm_args", "--tensor-parallel-size 8", ("vllm_args",)),
    ("unknown-gpu", "plans.0.gpu", "H900", ("H900",)),
]


@pytest.mark.parametrize(
    ("path", "value", "words"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS]
)
def test_plan_documents(
    plan_doc: dict[str, Any], tmp_path: Path, path: str, value: Any, words: tuple[str, ...]
) -> None:
    out = tmp_path / "out"
    refused(_render(_write(tmp_path, _set(plan_doc, path, value)), out, "--rank", "1"), *words)
    assert not out.exists()  # nothing written half-way


def test_no_plans_at_all(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    doc = _set(_set(plan_doc, "plans", []), "headline_plans", [])
    refused(_render(_write(tmp_path, doc), tmp_path / "o"), "no plans")


def test_vllm_args_edited_by_hand(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    doc = copy.deepcopy(plan_doc)
    args = doc["plans"][0]["vllm_args"]
    args[args.index("--tensor-parallel-size") + 1] = "4"
    refused(_render(_write(tmp_path, doc), tmp_path / "o", "--rank", "1"), "edited by hand")


def test_layout_the_planner_refuses(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    """TP24 on a 64-head model (a hand-edited plan): refused with the planner's own rule."""
    doc = copy.deepcopy(plan_doc)
    p = doc["plans"][0]
    p.update(gpus_per_node=24, nodes=1, tp=24, pp=1)
    args = p["vllm_args"]
    args[args.index("--tensor-parallel-size") + 1] = "24"
    args[args.index("--pipeline-parallel-size") + 1] = "1"
    refused(_render(_write(tmp_path, doc), tmp_path / "o", "--rank", "1"), "TP24", "64")


def test_tp_across_nodes_is_refused(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    doc = copy.deepcopy(plan_doc)
    p = doc["plans"][0]
    p.update(nodes=2, tp=p["gpus_per_node"] * 2, pp=1)
    args = p["vllm_args"]
    args[args.index("--tensor-parallel-size") + 1] = str(p["tp"])
    args[args.index("--pipeline-parallel-size") + 1] = "1"
    refused(_render(_write(tmp_path, doc), tmp_path / "o", "--rank", "1"), "inside a node")


def test_plan_that_does_not_fit_memory(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    """A plan moved by hand to one 22 GiB GPU: 70B weights at fp8 (~70 GB) cannot fit."""
    doc = copy.deepcopy(plan_doc)
    p = doc["plans"][0]
    p.update(gpu="L4", gpus_per_node=1, nodes=1, tp=1, pp=1)
    p["memory_gib_per_gpu"]["device"] = 22.0
    args = p["vllm_args"]
    args[args.index("--tensor-parallel-size") + 1] = "1"
    args[args.index("--pipeline-parallel-size") + 1] = "1"
    refused(_render(_write(tmp_path, doc), tmp_path / "o", "--rank", "1"), "L4", "exceed")


RAW: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("empty", b"", ("JSON",)),
    ("truncated", b'{"schema_version": 2, "plans": [{"rank": 1', ("JSON",)),
    ("not-utf8", b'{"schema_version": 2, "x": "\xff\xfe"}', ("UTF-8",)),
    ("top-level-list", b"[]", ("plan file",)),
    ("top-level-number", b"1", ("plan file",)),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, ("plan file",)),
    ("nan-price", b'{"schema_version": 2, "plans": [{"usd_per_hour": NaN}]}', ("plan file",)),
]


@pytest.mark.parametrize(("raw", "words"), [r[1:] for r in RAW], ids=[r[0] for r in RAW])
def test_raw_plan_files(tmp_path: Path, raw: bytes, words: tuple[str, ...]) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(raw)
    refused(_render(path, tmp_path / "o"), *words)


def test_missing_plan_file(tmp_path: Path) -> None:
    refused(_render(tmp_path / "nope.json", tmp_path / "o"), "nope.json")


def test_rank_not_in_the_file(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    refused(_render(_write(tmp_path, plan_doc), tmp_path / "o", "--rank", "999"), "--rank 999")


# ---- render targets ------------------------------------------------------------------------


def test_hand_edited_manifest_is_kept(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    plan, out = _write(tmp_path, plan_doc), tmp_path / "out"
    first = _render(plan, out)
    assert first.exit_code == 0, first.stderr
    (target,) = out.glob("*.yaml")
    target.write_text(target.read_text().replace("replicas: 1", "replicas: 3"))
    edited = target.read_text()
    refused(_render(plan, out), "--force", target.name)
    assert target.read_text() == edited  # the user's edit survives
    forced = _render(plan, out, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert target.read_text() != edited


def test_own_unedited_render_is_replaced(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    plan, out = _write(tmp_path, plan_doc), tmp_path / "out"
    assert _render(plan, out).exit_code == 0
    again = _render(plan, out)
    clean(again)
    assert again.exit_code == 0, again.stderr


def test_foreign_file_of_the_same_name(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    plan, out = _write(tmp_path, plan_doc), tmp_path / "out"
    out.mkdir()
    mine = out / "llama-3-1-70b.yaml"
    mine.write_text("# my own manifest\nkind: ConfigMap\n")
    refused(_render(plan, out), "not written by prov")
    assert mine.read_text() == "# my own manifest\nkind: ConfigMap\n"


def test_symlink_of_the_same_name(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    plan, out = _write(tmp_path, plan_doc), tmp_path / "out"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (out / "llama-3-1-70b.yaml").symlink_to(precious)
    refused(_render(plan, out), "not written by prov")
    assert precious.read_text() == "keep me"


def test_render_into_a_file(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    refused(_render(_write(tmp_path, plan_doc), tmp_path / "file"), "not a directory")


def test_render_below_a_file(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    failed(_render(_write(tmp_path, plan_doc), tmp_path / "file" / "out"), "cannot write")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_unwritable_directory(plan_doc: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir(mode=0o500)
    try:
        failed(_render(_write(tmp_path, plan_doc), out), "cannot write")
    finally:
        out.chmod(0o700)
