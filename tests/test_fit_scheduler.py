"""vLLM's scheduler defaults as `prov fit` resolves them (provisioner/core/vllm_rules.py).

Hand derivations from vllm/engine/arg_utils.py (EngineArgs.get_batch_defaults and
_set_default_max_num_seqs_and_batched_tokens_args @v0.11.2 / v0.14.1; _set_default_args
@v0.11.0): on a GPU of 70 GiB or more that is not an A100, `vllm serve` defaults to 8192
tokens and 1024 seqs, else 2048 / 256. From v0.11.2 a defaulted token budget is
min(max_num_seqs x max_model_len, default); a defaulted max_num_seqs is min(default, tokens).
Outside evidence: L07's v0.14.1 log (vllm issue #33155, --max-num-seqs 1, --max-model-len
5120, no --max-num-batched-tokens) compiles the range (1, 5120), i.e. 5120 batched tokens.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.core.vllm_rules import rules_for, scheduler_defaults

runner = CliRunner()
H100 = 79.19  # CUDA's total for an H100 80GB (provisioner/data/gpus.csv)
L40S = 44.42


def test_defaulted_tokens_capped_by_seqs_times_len_from_0_11_2() -> None:
    # L07: 1 seq x 5120 tokens < 8192 -> 5120 (the log's compile range (1, 5120)).
    assert scheduler_defaults(rules_for("0.14.1"), "H100-SXM", H100, 5120, 1) == (5120, 1)
    assert scheduler_defaults(rules_for("0.11.2"), "H100-SXM", H100, 5120, 1) == (5120, 1)
    # v0.11.0 set the GPU default whatever max_num_seqs was.
    assert scheduler_defaults(rules_for("0.11.0"), "H100-SXM", H100, 5120, 1) == (8192, 1)
    # small GPU: min(1 x 1000, 2048) = 1000
    assert scheduler_defaults(rules_for("0.14.1"), "L40S", L40S, 1000, 1) == (1000, 1)
    # the cap does not bind when max_num_seqs x max_model_len >= the default
    assert scheduler_defaults(rules_for("0.14.1"), "H100-SXM", H100, 4096, 2) == (8192, 2)


def test_defaulted_seqs_never_exceed_the_token_budget() -> None:
    # default seqs 1024, tokens 1024 x 4 = 4096 -> seqs min(1024, 4096) = 1024
    assert scheduler_defaults(rules_for("0.14.1"), "H100-SXM", H100, 4, None) == (4096, 1024)
    # an explicit token budget below the default seqs pulls seqs down (every version)
    assert scheduler_defaults(rules_for("0.11.0"), "H100-SXM", H100, 8192, None, 512) == (
        512,
        512,
    )
    # explicit values are kept as given
    assert scheduler_defaults(rules_for("0.14.1"), "H100-SXM", H100, 5120, 1, 8192) == (8192, 1)


def test_llm_class_default_then_cap() -> None:
    # LLM class on a big GPU: 16384 tokens, capped at 2 x 4096 = 8192 from v0.11.2
    assert scheduler_defaults(rules_for("0.14.1"), "H100-SXM", H100, 4096, 2, None, "llm") == (
        8192,
        2,
    )


def test_fit_reports_the_capped_budget() -> None:
    res = runner.invoke(
        app,
        [
            "fit", "--model", "openai/gpt-oss-120b", "--gpu", "H100-SXM", "--ctx", "5120",
            "--gpu-memory-utilization", "0.97", "--max-num-seqs", "1",
            "--vllm-version", "0.14.1", "--install", "pip", "--json",
        ],
    )  # fmt: skip
    assert res.exit_code in (0, 1), res.output
    doc = json.loads(res.output)
    assert doc["max_num_batched_tokens"] == 5120
    assert doc["max_num_seqs"] == 1
