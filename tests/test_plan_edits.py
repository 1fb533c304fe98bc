"""Hand-edited and older plan files at `prov deploy`: refused with one line and exit 2.

Plan files come from the real `prov quote --json` (in-process); a test edits one key. The
expected flags are read off the quote request by hand (--ctx 128k = 131,072 tokens).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from plan_files import edited as edit
from plan_files import quote_files
from typer.testing import CliRunner, Result

from provisioner.cli.main import app
from provisioner.contract.check import check_plan
from provisioner.contract.document import load_plan_document

KIMI = ["quote", "--model", "moonshotai/Kimi-K2-Thinking", "--ctx", "128k", "--json"]
QUOTES = {
    "h200": [*KIMI, "--weights", "hub", "--gpu", "H200"],
    "two": [*KIMI, "--weights", "hub", "--gpu", "H100-SXM", "--nodes", "2", "--market", "spot"],
    "llama": [
        "quote",
        "--model",
        "meta-llama/Llama-3.1-8B",
        "--ctx",
        "32k",
        "--json",
        "--weights",
        "hub",
    ],
}


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`prov quote ... --json > NAME.json` for each quote above."""
    return quote_files(tmp_path_factory.mktemp("plans"), QUOTES)


def refused(path: Path, out: Path) -> str:
    """`prov deploy --plan PATH --render OUT`: exit 2, one `prov: error:` line, nothing written."""
    result = run("deploy", "--plan", str(path), "--rank", "1", "--render", str(out))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prov: error: "), result.stderr
    assert not out.exists()
    return lines[0]


def set_flag(flag: str, value: str) -> Any:
    def change(d: dict[str, Any]) -> None:
        args = d["plans"][0]["vllm_args"]
        args[args.index(flag) + 1] = value

    return change


# ---- review8 #6: the flags vLLM receives are the plan's own ---------------------------------


def test_edited_max_model_len_is_refused(plans: dict[str, Path], tmp_path: Path) -> None:
    path = edit(tmp_path, plans["h200"], set_flag("--max-model-len", "1000000"))
    line = refused(path, tmp_path / "out")
    assert "--max-model-len 1000000" in line and "131072" in line  # 128k = 128 x 1024
    assert "edited by hand: quote again" in line


def test_an_appended_flag_is_refused(plans: dict[str, Path], tmp_path: Path) -> None:
    path = edit(
        tmp_path, plans["h200"], lambda d: d["plans"][0]["vllm_args"].append("--enforce-eager")
    )
    assert "carry --enforce-eager" in refused(path, tmp_path / "out")


def test_a_dropped_flag_is_refused(plans: dict[str, Path], tmp_path: Path) -> None:
    def drop(d: dict[str, Any]) -> None:
        args = d["plans"][0]["vllm_args"]
        i = args.index("--gpu-memory-utilization")
        del args[i : i + 2]

    assert "lack --gpu-memory-utilization" in refused(
        edit(tmp_path, plans["h200"], drop), tmp_path / "out"
    )


def test_edited_memory_fraction_is_refused(plans: dict[str, Path], tmp_path: Path) -> None:
    path = edit(tmp_path, plans["llama"], set_flag("--gpu-memory-utilization", "0.99"))
    assert "--gpu-memory-utilization 0.99" in refused(path, tmp_path / "out")


@pytest.mark.parametrize("name", list(QUOTES))
def test_every_quoted_rank_passes_the_recheck(plans: dict[str, Path], name: str) -> None:
    """The seam: what quote writes (TP, PP, DP+EP, multi-node) is what deploy re-derives."""
    doc = load_plan_document(plans[name])
    assert doc.plans
    for plan in doc.plans:
        assert check_plan(doc, plan) is None, plan.rank


# ---- review8 #7: a plan from an older prov is named as such ---------------------------------


def test_a_plan_from_an_older_prov_is_named_older(plans: dict[str, Path], tmp_path: Path) -> None:
    """What a prov before DP/EP layouts wrote: schema_version 1, no dp, no ep."""

    def older(d: dict[str, Any]) -> None:
        d["schema_version"] = 1
        for p in d["plans"]:
            p.pop("dp"), p.pop("ep"), p.pop("layout")

    line = refused(edit(tmp_path, plans["h200"], older), tmp_path / "out")
    assert "written by an older prov (schema_version 1" in line and "quote again" in line
    assert "GPUs" not in line  # not the misleading TP x PP arithmetic


def test_a_version_1_plan_with_dp_and_ep_still_deploys(
    plans: dict[str, Path], tmp_path: Path
) -> None:
    """What prov wrote between DP/EP layouts and the version bump: still a valid plan."""
    path = edit(tmp_path, plans["h200"], lambda d: d.update(schema_version=1))
    out = tmp_path / "out"
    result = run("deploy", "--plan", str(path), "--rank", "1", "--render", str(out))
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == ["kimi-k2-thinking.yaml"]


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_a_version_that_only_equals_1_is_not_a_version(
    plans: dict[str, Path], tmp_path: Path, version: object
) -> None:
    # JSON true and 1.0 compare equal to 1 in Python; neither is a schema version prov wrote
    path = edit(tmp_path, plans["h200"], lambda d: d.update(schema_version=version))
    line = refused(path, tmp_path / "out")
    assert "is not a whole number: quote again" in line


def test_a_current_plan_without_dp_names_the_key(plans: dict[str, Path], tmp_path: Path) -> None:
    path = edit(tmp_path, plans["h200"], lambda d: d["plans"][0].pop("dp"))
    line = refused(path, tmp_path / "out")
    assert "plans[0].dp: Field required" in line


def test_quote_writes_the_version_the_contract_reads(plans: dict[str, Path]) -> None:
    assert json.loads(plans["h200"].read_text())["schema_version"] == 2
    assert load_plan_document(plans["h200"]).schema_version == 2


# ---- review8 further findings: the offer a plan names must be one the prices know -----------

AWS_QUOTE = [*KIMI, "--weights", "hub", "--gpu", "H200", "--cloud", "aws", "--region", "us-east-2"]


@pytest.fixture(scope="module")
def aws_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = run(*AWS_QUOTE)
    assert result.exit_code == 0, result.output
    path = tmp_path_factory.mktemp("aws") / "aws.json"
    path.write_text(result.stdout, encoding="utf-8")
    data = json.loads(result.stdout)["plans"][0]
    assert (data["cloud"], data["region"], data["instance_type"]) == (
        "aws", "us-east-2", "p5en.48xlarge"
    )  # fmt: skip
    return path


def set_plan(**fields: Any) -> Any:
    return lambda d: d["plans"][0].update(fields)


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        # p5en.48xlarge is AWS's (EC2 instance types); a kubeconfig render dropped its requests
        ({"cloud": "gcp"}, "p5en.48xlarge is sold on aws, not gcp"),
        # AWS zone ids name their region: use1-* are us-east-1's, use2-* us-east-2's
        ({"zone": "use1-az9"}, "zone use1-az9 is not one of us-east-2's"),
        ({"zone": "use1-az1"}, "zone use1-az1 is in us-east-1, not us-east-2"),
    ],
)
def test_an_offer_edited_by_hand_is_refused(
    aws_plan: Path, tmp_path: Path, fields: dict[str, str], said: str
) -> None:
    line = refused(edit(tmp_path, aws_plan, set_plan(**fields)), tmp_path / "out")
    assert said in line and "quote again" in line


def test_an_unknown_region_is_named_as_unknown(aws_plan: Path, tmp_path: Path) -> None:
    # was: "EKS needs subnets in two availability zones ... prov knows only moo1-az1 in moon-1"
    path = edit(tmp_path, aws_plan, set_plan(region="moon-1", zone="moo1-az1"))
    assert "prov knows no aws region 'moon-1'" in refused(path, tmp_path / "out")
    path = edit(tmp_path, aws_plan, set_plan(region="moon-1"))
    line = refused(path, tmp_path / "out")
    assert "zone use2-az" in line and "not moon-1" in line


def test_an_instance_type_no_price_knows_renders_with_a_warning(
    aws_plan: Path, tmp_path: Path
) -> None:
    path = edit(tmp_path, aws_plan, set_plan(instance_type="p9.mega"))
    out = tmp_path / "out"
    result = run("deploy", "--plan", str(path), "--rank", "1", "--render", str(out))
    assert result.exit_code == 0, result.output
    assert "prov's prices do not know aws p9.mega" in " ".join(result.stderr.split())
    assert "no CPU or memory requests" in " ".join(result.stderr.split())
