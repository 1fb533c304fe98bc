"""prov deploy / destroy / status at the CLI boundary: render end to end, bad input, no Pulumi.

Plan files are written by the real `prov quote --json` (in-process), then edited only where a
test needs a broken one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from plan_files import edited, quote_files
from typer.testing import CliRunner, Result

from provisioner.cli.main import app

# --weights hub: today's download path; the s3 path is tested in tests/stacks/test_weights.py
KIMI = ["quote", "--model", "moonshotai/Kimi-K2-Thinking", "--ctx", "128k", "--json"]
KIMI += ["--weights", "hub"]
QUOTES = {
    "one": [*KIMI, "--gpu", "H200"],
    "two": [*KIMI, "--gpu", "H100-SXM", "--nodes", "2", "--market", "spot"],
    "one_aws": [*KIMI, "--gpu", "H200", "--cloud", "aws"],
    "gguf": ["quote", "--model", "meta-llama/Llama-3.1-70B", "--quant", "q4_k_m", "--json"],
    "mi300x": [*KIMI, "--gpu", "MI300X"],
}


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def one_line_error(result: Result, code: int) -> str:
    """Exit `code` with a single 'prov: error: ...' line and no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prov: error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def plan_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`prov quote ... --json > NAME.json` for each quote above."""
    return quote_files(tmp_path_factory.mktemp("plans"), QUOTES)


# ---- the done-when flow: quote --json > plan.json && deploy --render out/ -----------------


@pytest.mark.parametrize(
    ("name", "workload", "size"), [("one", "Deployment", None), ("two", "LeaderWorkerSet", 2)]
)
def test_render_writes_manifests_for_the_plan(
    plan_files: dict[str, Path], tmp_path: Path, name: str, workload: str, size: int | None
) -> None:
    out = tmp_path / "out"
    result = run("deploy", "--plan", str(plan_files[name]), "--render", str(out))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    (path,) = out.iterdir()
    assert path.name == "kimi-k2-thinking.yaml" and str(path) in result.stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}
    assert set(docs) == {workload, "Service", "PodDisruptionBudget"}
    if size is not None:
        assert docs[workload]["spec"]["leaderWorkerTemplate"]["size"] == size
    assert docs["Service"]["spec"]["type"] == "ClusterIP"
    assert "kubectl -n default create secret generic kimi-k2-thinking-secrets" in path.read_text()


# ---- bad input: exit 2, one line, nothing written ------------------------------------------


def test_missing_plan_file(tmp_path: Path) -> None:
    line = one_line_error(
        run("deploy", "--plan", str(tmp_path / "nope.json"), "--render", str(tmp_path / "o")), 2
    )
    assert "nope.json: cannot read plan file" in line
    assert not (tmp_path / "o").exists()


def test_wrong_schema_version(plan_files: dict[str, Path], tmp_path: Path) -> None:
    path = edited(tmp_path, plan_files["one"], lambda d: d.update(schema_version=3))
    line = one_line_error(run("deploy", "--plan", str(path), "--preview"), 2)
    assert "schema_version 3" in line and "newer prov" in line


def test_plan_missing_a_field(plan_files: dict[str, Path], tmp_path: Path) -> None:
    path = edited(tmp_path, plan_files["one"], lambda d: d["plans"][0].pop("tp"))
    line = one_line_error(run("deploy", "--plan", str(path), "--preview"), 2)
    assert "plans[0].tp" in line


@pytest.mark.parametrize("rank", ["99", "0"])
def test_rank_that_does_not_exist(plan_files: dict[str, Path], rank: str) -> None:
    line = one_line_error(run("deploy", "--plan", str(plan_files["one"]), "--rank", rank), 2)
    assert f"--rank {rank}" in line


def test_plan_without_plans(plan_files: dict[str, Path], tmp_path: Path) -> None:
    path = edited(tmp_path, plan_files["one"], lambda d: d.update(plans=[]))
    assert "no plans" in one_line_error(run("deploy", "--plan", str(path), "--preview"), 2)


def test_aws_target_needs_an_aws_plan(plan_files: dict[str, Path]) -> None:
    doc = json.loads(plan_files["one"].read_text())
    assert doc["plans"][0]["cloud"] != "aws"  # rank 1 of an unfiltered H200 quote
    args = ["deploy", "--plan", str(plan_files["one"]), "--target", "aws-eks", "--preview"]
    line = one_line_error(run(*args, "--rank", "1"), 2)
    assert "needs an AWS plan" in line
    # without --rank, the best plan that target can run is taken, and the output says which
    aws = next(p["rank"] for p in doc["plans"] if p["cloud"] == "aws")
    result = run(*args)
    assert f"Using rank {aws}, the best plan prov deploy can run" in result.stdout


def test_plans_prov_cannot_deploy(plan_files: dict[str, Path], tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    gguf = one_line_error(run("deploy", "--plan", str(plan_files["gguf"]), "--render", out), 2)
    assert "vLLM only" in gguf
    # the refusal names the command that gives a plan prov deploy can run
    assert "prov quote --model meta-llama/Llama-3.1-70B --quant auto" in gguf
    assert not (tmp_path / "o").exists()
    ranked = one_line_error(
        run("deploy", "--plan", str(plan_files["gguf"]), "--rank", "1", "--render", out), 2
    )
    assert "rank 1: runs on llama.cpp" in ranked


def test_amd_plans_render_with_rocm(plan_files: dict[str, Path], tmp_path: Path) -> None:
    """MI300X: vLLM's ROCm image and AMD's device plugin resource (issue 17)."""
    doc = json.loads(plan_files["mi300x"].read_text())
    assert doc["plans"][0]["deployable"] is True
    result = run("deploy", "--plan", str(plan_files["mi300x"]), "--render", str(tmp_path))
    assert result.exit_code == 0, result.output
    text = next(tmp_path.glob("*.yaml")).read_text()
    assert "image: vllm/vllm-openai-rocm:v0.18.0" in text
    assert "amd.com/gpu: '8'" in text
    assert "nvidia.com/gpu: " not in text  # no NVIDIA resource requested
    # AWS rents no AMD GPUs: the EKS target refuses it and says what to do
    line = one_line_error(
        run("deploy", "--plan", str(plan_files["mi300x"]), "--target", "aws-eks", "--rank", "1"),
        2,
    )
    assert "needs an AWS plan" in line


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--name", "Kimi_K2"], "--name"),
        (["--namespace", "Bad Space"], "--namespace"),
        (["--drain-seconds", "-1"], "--drain-seconds"),
        (["--target", "gke"], "unknown --target"),
        (["--render", "out", "--preview"], "--render"),
        (["--image", " "], "--image"),
        (["--stack", "bad/name", "--preview"], "--stack"),
        ([], "--yes"),  # not a terminal: no prompt, so a deploy must say --yes
    ],
)
def test_bad_flags(plan_files: dict[str, Path], flags: list[str], expected: str) -> None:
    line = one_line_error(run("deploy", "--plan", str(plan_files["one"]), *flags), 2)
    assert expected in line


def test_render_into_a_file_is_refused(plan_files: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("mine")
    line = one_line_error(
        run("deploy", "--plan", str(plan_files["one"]), "--render", str(target)), 2
    )
    assert "not a directory" in line
    assert target.read_text() == "mine"


def test_kube_context_is_for_the_kubeconfig_target(plan_files: dict[str, Path]) -> None:
    args = ["deploy", "--plan", str(plan_files["one_aws"]), "--kube-context", "ctx", "--preview"]
    assert "--kube-context" in one_line_error(run(*args), 2)  # an AWS plan: aws-eks by default


def test_destroy_needs_yes_without_a_terminal() -> None:
    assert "--yes" in one_line_error(run("destroy", "--stack", "kimi"), 2)


# ---- no Pulumi CLI: exit 1 and say how to install it ----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["deploy", "--plan", "PLAN", "--preview"],
        ["deploy", "--plan", "PLAN", "--yes"],
        ["status"],
        ["destroy", "--stack", "kimi-k2-thinking", "--yes"],
    ],
)
def test_without_pulumi_cli_explains_itself(
    plan_files: dict[str, Path], tmp_path: Path, args: list[str]
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty), "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    args = [str(plan_files["one"]) if a == "PLAN" else a for a in args]
    line = one_line_error(run(*args, env=env), 1)
    assert "Pulumi CLI is not installed" in line and "get.pulumi.com" in line
    assert "--render" in line  # and what works without it


# ---- prov quote stays lean ------------------------------------------------------------------


def test_quote_does_not_import_deploy_dependencies() -> None:
    code = (
        "import sys\n"
        "from provisioner.cli.main import main\n"
        "sys.argv = ['prov', 'quote', '--model', 'kimi-k2-thinking', '--ctx', '128k', '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('pulumi', 'pulumi_aws', 'pulumi_kubernetes', 'kubernetes', 'boto3', 'yaml',"
        " 'stacks', 'stacks.automation', 'provisioner.contract.document')\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.startswith('stacks.')),"
        " file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    # the last line is the module list; before it only the price-age warning may appear
    # (wrapped: its continuation lines are indented)
    *warnings, modules = proc.stderr.strip().splitlines()
    assert modules == "[]"
    assert all(w.startswith("  ") or "prices shown" in w for w in warnings), warnings
    assert json.loads(proc.stdout)["plans"]


# ---- the runner's local pieces (no CLI needed) ---------------------------------------------


def test_generated_passphrase_is_private_and_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stacks.automation import _passphrase_env

    for key in ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(key, raising=False)
    env = _passphrase_env(tmp_path)
    path = Path(env["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert path.parent == tmp_path and path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    assert len(first.strip()) >= 32
    assert _passphrase_env(tmp_path) == env and path.read_text() == first
    assert [p.name for p in tmp_path.iterdir()] == ["passphrase"]  # no temp file left
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "mine")
    assert _passphrase_env(tmp_path) == {}  # the user's own passphrase wins


def test_finds_the_cli_where_the_installer_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stacks.automation import find_pulumi

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_pulumi() is None
    cli = tmp_path / ".pulumi" / "bin" / "pulumi"
    cli.parent.mkdir(parents=True)
    cli.write_text("#!/bin/sh\n")
    cli.chmod(0o755)
    assert find_pulumi() == cli


def test_state_lives_under_the_user_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stacks.automation import state_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_dir() == tmp_path / "prov" / "pulumi"


def test_a_failed_pulumi_command_is_summed_up_by_its_error_line() -> None:
    from stacks.automation import _last_error_line

    text = (
        "\n code: 255\n stdout: Updating (dev)\n  + kubernetes:apps/v1:Deployment creating\n"
        "    error: 1 error occurred: Unauthorized\n stderr: error: update failed\n"
    )
    assert _last_error_line(text) == "error: update failed"
    assert _last_error_line("\n code: 1\n stdout: \n stderr: boom") == "boom"


def test_daemon_mode_is_checked(plan_files: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from provisioner.cli.main import app

    result = CliRunner().invoke(
        app, ["deploy", "--plan", str(next(iter(plan_files.values()))), "--daemon", "both"]
    )
    assert result.exit_code == 2
    assert "--daemon 'both': allowed: queue, imds, none" in result.output


# ---- --weights: the plan's path, or the one given; s3 needs its bucket ---------------------


def test_s3_plan_without_a_bucket_is_refused_naming_the_fixes(
    plan_files: dict[str, Path], tmp_path: Path
) -> None:
    s3 = edited(tmp_path, plan_files["one"], lambda d: d["request"].update(weights="s3"))
    out = tmp_path / "out"
    args = ("deploy", "--plan", str(s3), "--rank", "1", "--render", str(out), "--weights", "s3")
    line = one_line_error(run(*args), 2)
    assert "--weights-bucket s3://BUCKET[/PREFIX]" in line and "--weights hub" in line
    assert not out.exists()


def test_s3_plan_without_any_weights_flag_deploys_the_hub_path_and_says_so(
    plan_files: dict[str, Path], tmp_path: Path
) -> None:
    """No --weights and no bucket: the path that needs nothing, with a warning naming the fix."""
    s3 = edited(tmp_path, plan_files["one"], lambda d: d["request"].update(weights="s3"))
    out = tmp_path / "out"
    result = run("deploy", "--plan", str(s3), "--rank", "1", "--render", str(out))
    assert result.exit_code == 0, result.output
    assert "--weights-bucket s3://BUCKET[/PREFIX]" in result.stderr
    # review8: a render of an aws-eks plan said "deploying it to aws-eks creates one: deploying
    # --weights hub"; the reason is that a render cannot name the bucket the stack creates
    err = " ".join(result.stderr.split())
    assert "no --weights-bucket was given: rendering --weights hub" in err
    assert "creates one" not in err
    (path,) = out.iterdir()
    docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}
    args = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--load-format" not in args and not any(a.startswith("s3://") for a in args)


def test_render_with_weights_s3_streams_from_the_bucket(
    plan_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run(
        "deploy", "--plan", str(plan_files["one"]), "--render", str(out),
        "--weights", "s3", "--weights-bucket", "s3://my-weights/kimi",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (path,) = out.iterdir()
    docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}
    args = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--model") + 1] == "s3://my-weights/kimi"
    assert args[args.index("--load-format") + 1] == "runai_streamer"


@pytest.mark.parametrize("name", ["mi300x", "one_aws"])
def test_a_bucket_for_a_plan_on_another_cloud_is_warned_about(
    plan_files: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """Streaming an Azure (or any non-AWS) plan's weights from S3 crosses clouds: the render
    goes ahead, with a warning; an AWS plan reading its bucket gets none."""
    cloud = json.loads(plan_files[name].read_text())["plans"][0]["cloud"]
    assert (cloud != "aws") == (name == "mi300x")  # the fixture's rank 1
    out = tmp_path / "out"
    result = run(
        "deploy", "--plan", str(plan_files[name]), "--rank", "1", "--render", str(out),
        "--weights", "s3", "--weights-bucket", "s3://my-weights/kimi",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    crossing = f"the plan runs on {cloud} and streams its weights from s3://my-weights:"
    said = " ".join(result.stderr.split())  # the warning is wrapped to the terminal
    assert (crossing in said) == (cloud != "aws")
    assert all(len(line) <= 80 for line in result.stderr.splitlines())


def test_storage_flags_are_deploy_options_with_the_same_defaults() -> None:
    """deploy passes StorageFlags into DeployOptions by field name: the two must agree."""
    from dataclasses import fields

    from provisioner.cli.deploy_storage import StorageFlags
    from stacks.options import DeployOptions

    options = {f.name: f.default for f in fields(DeployOptions)}
    flags = {f.name: f.default for f in fields(StorageFlags)}
    assert set(flags) <= set(options)
    assert {k: options[k] for k in flags} == flags
    assert len(flags) == 9  # --weights ... --compile-cache (docs/deploy.md)


@pytest.mark.parametrize("name", ["mi300x", "one_aws"])
def test_an_azure_spot_plan_tolerates_the_aks_spot_taint(
    plan_files: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """AKS taints spot pools kubernetes.azure.com/scalesetpriority=spot:NoSchedule (Microsoft
    Learn, "Add an Azure Spot node pool"): a plan priced on Azure spot must tolerate it, or the
    pod never lands on the nodes it was priced on; other plans do not carry it."""
    plan = json.loads(plan_files[name].read_text())["plans"][0]
    out = tmp_path / "out"
    # --rank 1: without it deploy skips a rank 1 on an estimated Azure spot price
    result = run("deploy", "--plan", str(plan_files[name]), "--rank", "1", "--render", str(out))
    assert result.exit_code == 0, result.output
    (path,) = out.iterdir()
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    aks = {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    }
    azure_spot = plan["cloud"] == "azure" and plan["market"] == "spot"
    assert azure_spot == (name == "mi300x")  # the fixtures' rank 1
    assert (aks in pod["tolerations"]) == azure_spot


def test_the_hub_fallback_says_why_a_render_of_an_eks_plan_has_no_bucket() -> None:
    from provisioner.cli.deploy_storage import hub_fallback_warning

    text = hub_fallback_warning(eks=True, render=True)
    assert "a render cannot name the bucket the aws-eks stack creates: rendering --weights hub" in (
        text
    )
    assert "deploying --weights hub" in hub_fallback_warning(eks=False)
