"""The seam between quote and deploy: a plan is marked deployable exactly when `prov deploy`
(stacks/spec.build_spec, default options) accepts it. Both sides run here, on real quotes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.contract.document import PlanDocument
from provisioner.errors import UsageError
from stacks.options import DeployOptions
from stacks.spec import build_spec

QUOTES = {
    "kimi-every-vendor": [
        "--model",
        "moonshotai/Kimi-K2-Thinking",
        "--quant",
        "int4",
        "--ctx",
        "128k",
    ],
    "gpt-oss-aws": ["--model", "openai/gpt-oss-120b", "--ctx", "64k", "--cloud", "aws"],
    "llama-gguf": ["--model", "meta-llama/Llama-3.1-70B", "--quant", "q4_k_m", "--ctx", "8k"],
    "llama-every-cloud": ["--model", "meta-llama/Llama-3.1-70B", "--ctx", "8k", "--max-nodes", "1"],
}


@pytest.mark.parametrize("args", QUOTES.values(), ids=QUOTES.keys())
def test_deployable_iff_deploy_accepts(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["quote", *args, "--top", "40", "--json"])
    assert result.exit_code == 0, result.output
    doc = PlanDocument.model_validate(json.loads(result.stdout))
    marks = []
    for p in doc.plans:
        try:
            build_spec(doc, DeployOptions(rank=p.rank, weights="hub"))  # the bucket is an option
            accepted = True
        except UsageError as e:
            accepted = False
            assert p.not_deployable_reason and p.not_deployable_reason in str(e)
        assert p.deployable is accepted, (p.rank, p.cloud, p.gpu, p.not_deployable_reason)
        marks.append(accepted)
    # each quote above exercises the rule: GGUF none, the others mostly deployable
    assert any(marks) != ("q4_k_m" in args)
