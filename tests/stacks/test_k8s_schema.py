"""Every rendered manifest against the Kubernetes API's own schema (strict: unknown fields fail).

kubernetes-validate carries the OpenAPI schemas the API server publishes, per version; EKS 1.34
is the stack's (stacks/cluster.py). The LeaderWorkerSet is a CRD the package does not carry: it
is checked field by field in test_manifests.py. Each storage choice of docs/deploy.md is
rendered, so a DaemonSet, claim, Job or sidecar that the API server would reject fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_harness import KIMI, PlanFile, quote
from test_weights import KIMI_P5EN

from stacks.options import DeployOptions
from stacks.render import write_render
from stacks.spec import build_spec

kubernetes_validate = pytest.importorskip("kubernetes_validate")
K8S_VERSION = "1.34"  # stacks/cluster.py EKS_VERSION

VARIANTS: dict[str, dict[str, Any]] = {
    "s3 (prepull, compile cache)": {"weights": "s3", "weights_bucket": "s3://my-weights/kimi"},
    "s3 + fill": {"weights": "s3", "weights_bucket": "s3://my-weights/kimi", "fill_weights": True},
    "s3 bare": {"weights": "s3", "weights_bucket": "s3://w-b/k", "prepull": False,
                "compile_cache": False},
    "pvc created + fill": {"weights": "pvc", "weights_storage_class": "efs-sc",
                           "fill_weights": True},
    "pvc given, kubeconfig": {"weights": "pvc", "weights_pvc": "models", "target": "kubeconfig"},
    "hub + prepull": {"weights": "hub", "prepull": True},
}  # fmt: skip


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PlanFile]:
    tmp = tmp_path_factory.mktemp("schema")
    two = [*KIMI, "--gpu", "H100-SXM", "--nodes", "2", "--layout", "tp"]
    return {
        "one": quote(tmp, "one", KIMI_P5EN),
        "two": quote(tmp, "two", [*two, "--cloud", "aws", "--region", "us-east-2"]),
    }


@pytest.mark.parametrize("shape", ["one", "two"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_manifests_pass_the_api_schema(
    plans: dict[str, PlanFile], tmp_path: Path, shape: str, variant: str
) -> None:
    spec = build_spec(plans[shape].doc, DeployOptions(**VARIANTS[variant]))
    path = write_render(tmp_path / "out", spec)
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    checked = []
    for doc in docs:
        if doc["kind"] == "LeaderWorkerSet":
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked.append(doc["kind"])
    assert checked and ("Deployment" in checked) == (shape == "one")
