"""Fuzz: command-line values, click's own usage errors, and filters that empty a quote."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from fuzz_harness import ROOT, clean, failed, refused, run

KIMI = ("quote", "--model", "moonshotai/Kimi-K2-Thinking", "--quant", "int4", "--ctx", "128k")
SMALL = ("quote", "--model", "meta-llama/Llama-3.1-8B", "--ctx", "8k")

FLAGS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("ctx-word", ("--ctx", "abc"), ("--ctx",)),
    ("ctx-negative", ("--ctx", "-5"), ("--ctx",)),
    ("ctx-zero", ("--ctx", "0"), ("--ctx",)),
    ("ctx-fraction", ("--ctx", "1.5"), ("--ctx",)),
    ("ctx-unit", ("--ctx", "128q"), ("--ctx",)),
    ("ctx-empty", ("--ctx", ""), ("--ctx",)),
    ("ctx-beyond-model", ("--ctx", "1m"), ("max_position_embeddings",)),
    ("ctx-astronomic", ("--ctx", "99999999999999k"), ("--ctx",)),
    ("quant-unknown", ("--quant", "int3"), ("--quant",)),
    ("kv-dtype-unknown", ("--kv-dtype", "fp4"), ("--kv-dtype",)),
    ("market-unknown", ("--market", "reserved"), ("--market", "spot")),
    ("objective-unknown", ("--objective", "fastest"), ("--objective",)),
    ("gmu-zero", ("--gpu-memory-utilization", "0"), ("--gpu-memory-utilization",)),
    ("gmu-above-one", ("--gpu-memory-utilization", "1.5"), ("--gpu-memory-utilization",)),
    ("gmu-nan", ("--gpu-memory-utilization", "nan"), ("--gpu-memory-utilization",)),
    ("max-nodes-zero", ("--max-nodes", "0"), ("--max-nodes",)),
    ("max-nodes-huge", ("--max-nodes", "1000000"), ("--max-nodes",)),
    ("nodes-zero", ("--nodes", "0"), ("--nodes",)),
    ("top-negative", ("--top", "-1"), ("--top",)),
    ("top-word", ("--top", "ten"), ("--top",)),
    ("concurrency-zero", ("--concurrency", "0"), ("--concurrency",)),
    ("isl-zero", ("--isl", "0"), ("--isl",)),
    ("isl-beyond-ctx", ("--isl", "9000", "--osl", "1000", "--ctx", "8k"), ("--isl",)),
    ("dcp-zero", ("--dcp", "0"), ("--dcp",)),
    ("tpot-negative", ("--max-tpot-ms", "-1"), ("--max-tpot-ms",)),
    ("interruption-above-100", ("--max-interruption", "101"), ("--max-interruption",)),
    ("offload-negative", ("--cpu-offload-gb", "-1"), ("--cpu-offload-gb",)),
    ("gpu-unknown", ("--gpu", "H900"), ("--gpu", "nvidia", "amd")),
    ("cloud-unknown", ("--cloud", "mars"), ("--cloud", "aws")),
    ("region-unknown", ("--region", "mars-1"), ("--region mars-1", "regions with offers")),
    ("price-age-negative", ("--max-price-age", "-1"), ("--max-price-age",)),
    ("model-unknown", ("--model", "acme/nothing"), ("unknown model",)),
    ("model-empty", ("--model", " "), ("--model",)),
    ("json-with-a-value", ("--json=yes",), ("--json",)),
    ("unknown-option", ("--fastest",), ("--fastest",)),
    ("missing-value", ("--ctx",), ("--ctx",)),
    ("stray-argument", ("extra",), ("extra",)),
]


@pytest.mark.parametrize(("flags", "words"), [f[1:] for f in FLAGS], ids=[f[0] for f in FLAGS])
def test_quote_flags(flags: tuple[str, ...], words: tuple[str, ...]) -> None:
    base = list(SMALL)
    if "--ctx" in flags:  # the case's own --ctx replaces the base one
        i = base.index("--ctx")
        del base[i : i + 2]
    if "--model" in flags:
        i = base.index("--model")
        del base[i : i + 2]
    refused(run(*base, *flags), *words)


@pytest.mark.parametrize(
    "args",
    [
        ("bogus",),
        ("models", "bogus"),
        ("models", "show"),
        ("deploy",),
        ("prices", "show", "--top", "x"),
        ("daemon", "--workers", "many"),
    ],
    ids=["command", "subcommand", "missing-argument", "missing-option", "bad-int", "daemon-int"],
)
def test_click_usage_errors_are_one_line(args: tuple[str, ...]) -> None:
    refused(run(*args))


def test_unmeetable_slo_names_the_flag() -> None:
    failed(run(*KIMI, "--max-tpot-ms", "0.001"), "--max-tpot-ms", "relax")


def test_nothing_fits_names_the_reason() -> None:
    line = failed(run(*KIMI, "--gpu", "L4", "--max-nodes", "1"), "no offer can run")
    assert "--show-rejected" in line


def test_show_rejected_groups_by_reason() -> None:
    result = run(*KIMI, "--gpu", "L4", "--max-nodes", "1", "--show-rejected")
    failed(result)
    lines = result.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("rejected shapes:"))
    groups = [re.match(r"^ *(\d+)  \S", ln) for ln in lines[head + 1 :]]
    counts = [int(m.group(1)) for m in groups if m]
    total = int(lines[head].split(":")[1].split(",")[0])
    assert counts and sum(counts) == total  # every rejection counted in one group
    assert counts == sorted(counts, reverse=True)


def test_vendor_filters() -> None:
    for vendor, gpus in (("amd", {"MI300X"}), ("nvidia", None)):
        result = run(*KIMI, "--gpu", vendor, "--json", "--top", "0")
        clean(result)
        assert result.exit_code == 0, result.stderr
        seen = {p["gpu"] for p in json.loads(result.stdout)["plans"]}
        if gpus is not None:
            assert seen == gpus
        else:
            assert seen and "MI300X" not in seen


def test_quote_into_head_exits_quietly() -> None:
    """`prov quote ... | head -1`: the reader leaves early; no traceback, no error, exit 0."""
    p = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli.main", *KIMI, "--top", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None
    p.stdout.readline()
    p.stdout.close()  # what head does after its line
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode()
    # only prov's own warnings (stale prices, wrapped: continuations indented), never a
    # broken-pipe error or traceback
    lines = err.decode().splitlines()
    assert all(ln.startswith(("prov: warning: ", "  ")) for ln in lines), err
    assert not lines or lines[0].startswith("prov: warning: "), err
