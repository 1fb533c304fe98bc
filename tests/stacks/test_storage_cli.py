"""`prov deploy` with the storage flags: inconsistent ones exit 2 with one line, consistent ones
render what docs/deploy.md says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import Result
from stack_harness import PlanFile, quote
from test_weights import KIMI_P5EN
from typer.testing import CliRunner

from provisioner.cli.main import app


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> PlanFile:
    return quote(tmp_path_factory.mktemp("storage_cli"), "s3", KIMI_P5EN)


def deploy(plan: PlanFile, out: Path, *args: str) -> Result:
    argv = ["deploy", "--plan", str(plan.path), "--rank", "1", "--render", str(out), *args]
    return CliRunner().invoke(app, argv)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--weights", "pvc"], "needs exactly one of --weights-pvc NAME"),
        (["--weights", "pvc", "--weights-pvc", "a", "--weights-storage-class", "b"], "exactly"),
        (["--weights", "pvc", "--weights-pvc", "w", "--weights-pvc-gbps", "-1"], "must be > 0"),
        (["--weights", "s3", "--weights-pvc", "w"], "apply to --weights pvc only"),
        (["--weights", "hub", "--compile-cache"], "--weights hub has neither"),
        (["--weights", "hub", "--fill-weights"], "downloads at every start"),
        (["--weights", "s3"], "carries your AWS account id"),  # render: the bucket has no name
        (["--weights", "s3", "--weights-bucket", "s3://b1k/x", "--delete-weights-bucket"],
         "the bucket the aws-eks stack creates"),
    ],
)  # fmt: skip
def test_inconsistent_storage_flags_exit_2(
    plan: PlanFile, tmp_path: Path, args: list[str], needle: str
) -> None:
    result = deploy(plan, tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prov: error: "), result.stderr
    assert needle in lines[0]
    assert not (tmp_path / "out").exists()


def kinds(result: Result, out: Path) -> list[str]:
    assert result.exit_code == 0, result.output
    (path,) = out.iterdir()
    return [d["kind"] for d in yaml.safe_load_all(path.read_text()) if d]


def test_pvc_render_lists_what_it_wrote(plan: PlanFile, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = deploy(
        plan, out, "--weights", "pvc", "--weights-storage-class", "efs-sc", "--fill-weights"
    )
    want = ["PersistentVolumeClaim", "DaemonSet", "Job", "Deployment", "Service"]
    assert kinds(result, out) == [*want, "PodDisruptionBudget"]
    assert "(PersistentVolumeClaim, DaemonSet, Job, Deployment" in result.stdout


def test_s3_switches_turn_the_extras_off(plan: PlanFile, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = deploy(
        plan, out, "--weights-bucket", "s3://my-weights/kimi", "--no-prepull", "--no-compile-cache"
    )
    assert kinds(result, out) == ["Deployment", "Service", "PodDisruptionBudget"]
    on = tmp_path / "on"
    assert "DaemonSet" in kinds(deploy(plan, on, "--weights-bucket", "s3://my-weights/k"), on)
