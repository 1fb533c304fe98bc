"""docs/deploy.md's "What runs" says what `--render` produces (review8 #9: it described a
`minAvailable` PDB and a surging rollout the renderer had stopped making)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_harness import PlanFile

from stacks.options import DeployOptions
from stacks.render import write_render
from stacks.spec import build_spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def rendered(tmp_path: Path, plan: PlanFile) -> dict[str, dict[str, Any]]:
    path = write_render(tmp_path / "out", build_spec(plan.doc, DeployOptions()))
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def bullet(title: str) -> str:
    """The text of the `* **title:**` bullet of docs/deploy.md, on one line."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"^\* \*\*{re.escape(title)}:?\*\*(.*?)(?=^\* |^#|\Z)", text, re.M | re.S)
    assert m, title
    return " ".join(m.group(1).split())


def test_the_availability_bullet_names_the_rendered_pdb_and_rollout(
    plans: dict[str, PlanFile], tmp_path: Path
) -> None:
    said = bullet("Availability")
    assert "minAvailable" not in said
    one = rendered(tmp_path / "one", plans["one"])
    two = rendered(tmp_path / "two", plans["two"])
    # one node: maxUnavailable 1 (one replica = one pod); two nodes: 2 (one LWS group)
    assert one["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert two["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 2
    assert "`maxUnavailable` = one replica's pods (1 for a one-node plan, 2 for a two-node" in said
    rolling = one["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    lws = two["LeaderWorkerSet"]["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]
    assert rolling == lws == {"maxSurge": 0, "maxUnavailable": 1}
    assert "(`maxSurge 0`, `maxUnavailable 1`)" in said


@pytest.mark.parametrize("title", ["Availability", "Rollouts that finish on a fixed-size pool"])
def test_no_bullet_claims_a_surge(title: str) -> None:
    assert not re.search(r"maxSurge`? ?1", bullet(title))
