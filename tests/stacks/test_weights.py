"""Quote and deploy agree on the weight path and its time to serve (issue 16).

The seam: `prov quote` puts `time_to_serve` on every plan for its `--weights` path; the deploy
renders that path (vLLM's streamer from a bucket, or the Hub) and budgets the startup probe and
vLLM's engine timeout from the same `time_to_serve(...)`. Both sides run here, on real quotes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_harness import PlanFile, quote
from test_vllm_argv import unknown_flags, value

from provisioner.errors import UsageError
from stacks.options import DeployOptions
from stacks.render import write_render
from stacks.spec import build_spec

KIMI_P5EN = [
    "quote", "--model", "moonshotai/Kimi-K2-Thinking", "--quant", "int4", "--ctx", "128k",
    "--gpu", "H200", "--cloud", "aws", "--region", "us-east-1", "--layout", "tp",
    "--nodes", "1", "--json",
]  # fmt: skip
BUCKET = "s3://prov-weights-use1/kimi"


@pytest.fixture(scope="module")
def p5en(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PlanFile]:
    tmp = tmp_path_factory.mktemp("weights")
    return {
        "s3": quote(tmp, "s3", KIMI_P5EN),  # quote's default path
        "hub": quote(tmp, "hub", [*KIMI_P5EN, "--weights", "hub"]),
    }


def render(tmp_path: Path, plan: PlanFile, **options: Any) -> dict[str, Any]:
    path = write_render(tmp_path / "out", build_spec(plan.doc, DeployOptions(**options)))
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def vllm_container(docs: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    return c


def probe_budget(c: dict[str, Any]) -> tuple[int, int]:
    """(startupProbe failureThreshold x periodSeconds, VLLM_ENGINE_READY_TIMEOUT_S)."""
    p = c["startupProbe"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    return p["failureThreshold"] * p["periodSeconds"], int(env["VLLM_ENGINE_READY_TIMEOUT_S"])


def test_probe_budget_is_the_plans_time_to_serve(p5en: dict[str, PlanFile], tmp_path: Path) -> None:
    for path, want in (("s3", 600), ("hub", 2235)):
        plan = p5en[path].doc.plans[0]
        assert plan.instance_type == "p5en.48xlarge" and plan.nodes == 1
        assert plan.time_to_serve is not None and plan.time_to_serve.weights == path
        # docs/recovery.md's p5en table, by hand: s3 in-container 225 s x 2 = 450 < the 600 s
        # floor; hub 1,117 s x 2 = 2,235 s
        assert plan.time_to_serve.startup_probe_budget_s == want
        options = {"weights_bucket": BUCKET} if path == "s3" else {}
        probe, engine = probe_budget(vllm_container(render(tmp_path / path, p5en[path], **options)))
        assert engine == want
        assert want <= probe < want + 10  # whole 10 s periods


def test_other_path_than_the_plans_runs_the_same_function(
    p5en: dict[str, PlanFile], tmp_path: Path
) -> None:
    # an s3 plan deployed with --weights hub: the deploy models the hub path itself and must
    # land on what quote --weights hub carries for the same instance
    hub_quote = p5en["hub"].doc.plans[0].time_to_serve
    assert hub_quote is not None
    docs = render(tmp_path, p5en["s3"], weights="hub")
    assert probe_budget(vllm_container(docs))[1] == hub_quote.startup_probe_budget_s


def test_s3_renders_the_streamer_from_the_bucket(p5en: dict[str, PlanFile], tmp_path: Path) -> None:
    c = vllm_container(render(tmp_path, p5en["s3"], weights_bucket=BUCKET))
    argv = [*c["command"], *c["args"]]
    assert value(argv, "--model") == "s3://prov-weights-use1/kimi"
    assert value(argv, "--load-format") == "runai_streamer"  # vLLM v0.18.0 config/load.py
    assert value(argv, "--served-model-name") == "moonshotai/Kimi-K2-Thinking"  # clients' name
    assert argv.count("--model") == 1
    assert unknown_flags(argv) == []
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["RUNAI_STREAMER_CONCURRENCY"] == "8"


def test_s3_prefix_defaults_to_the_model_id(p5en: dict[str, PlanFile], tmp_path: Path) -> None:
    c = vllm_container(render(tmp_path, p5en["s3"], weights_bucket="s3://prov-weights-use1"))
    assert value(c["args"], "--model") == "s3://prov-weights-use1/moonshotai/Kimi-K2-Thinking"


def test_hub_keeps_todays_download(p5en: dict[str, PlanFile], tmp_path: Path) -> None:
    c = vllm_container(render(tmp_path, p5en["hub"]))
    assert value(c["args"], "--model") == "moonshotai/Kimi-K2-Thinking"
    assert "--load-format" not in c["args"]
    assert "RUNAI_STREAMER_CONCURRENCY" not in {e["name"] for e in c["env"]}


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        # s3 plan, no bucket, into your own cluster (nothing creates one): name both fixes
        ({"target": "kubeconfig"}, "--weights-bucket s3://BUCKET[/PREFIX]"),
        ({"weights_bucket": "prov-weights"}, "write it as s3://BUCKET"),
        ({"weights_bucket": "s3://Bad_Bucket"}, "is not an S3 bucket name"),
        ({"weights": "nfs"}, "allowed: s3, hub, pvc"),
        ({"weights": "pvc"}, "exactly one of --weights-pvc NAME"),
        ({"weights": "pvc", "weights_pvc": "w", "weights_storage_class": "efs"}, "exactly one"),
        ({"weights": "pvc", "weights_pvc": "Bad_Claim"}, "not a Kubernetes object name"),
        ({"weights": "pvc", "weights_pvc": "w", "weights_pvc_gbps": 0.0}, "must be > 0"),
        ({"weights": "s3", "weights_pvc": "w"}, "apply to --weights pvc only"),
        ({"weights": "pvc", "weights_pvc": "w", "weights_bucket": BUCKET}, "s3 only"),
        ({"weights": "hub", "weights_bucket": BUCKET}, "applies to --weights s3 only"),
        ({"weights": "hub", "compile_cache": True}, "--weights hub has neither"),
        ({"weights": "hub", "fill_weights": True}, "--weights hub downloads at every start"),
        # a given bucket is the user's: the stack neither keeps nor deletes it
        ({"weights_bucket": BUCKET, "keep_weights_bucket": False}, "the bucket the aws-eks"),
    ],
)
def test_unrenderable_weight_paths_are_refused(
    p5en: dict[str, PlanFile], options: dict[str, str], needle: str
) -> None:
    with pytest.raises(UsageError) as err:
        build_spec(p5en["s3"].doc, DeployOptions(**options))  # type: ignore[arg-type]
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_weights_round_trip_through_stack_config() -> None:
    options = DeployOptions(weights="s3", weights_bucket=BUCKET)
    config = options.to_config()
    assert DeployOptions.from_config(lambda k: config.get(f"prov:{k}")) == options


def test_prewarm_follows_time_to_serve_on_spot_only(p5en: dict[str, PlanFile]) -> None:
    doc = p5en["s3"].doc
    by_market = {p.market: p.rank for p in reversed(doc.plans)}
    assert set(by_market) == {"spot", "on-demand"}
    opts = {"weights_bucket": BUCKET}
    # 405 s (docs/recovery.md, s3) > AWS's 120 s notice; on-demand nodes are not reclaimed
    spot = build_spec(doc, DeployOptions(rank=by_market["spot"], **opts))  # type: ignore[arg-type]
    od = build_spec(doc, DeployOptions(rank=by_market["on-demand"], **opts))  # type: ignore[arg-type]
    assert spot.prewarm_on_rebalance is True
    assert od.prewarm_on_rebalance is False


def test_fill_job_downloads_then_syncs_the_same_directory(
    p5en: dict[str, PlanFile], tmp_path: Path
) -> None:
    path = write_render(
        tmp_path / "out",
        build_spec(p5en["s3"].doc, DeployOptions(weights_bucket=BUCKET, fill_weights=True)),
    )
    text = path.read_text()
    kinds = [d["kind"] for d in yaml.safe_load_all(text) if d]
    assert kinds.index("Job") < kinds.index("Deployment")  # applied first
    assert "kubectl -n default wait --for=condition=complete" in text
    docs = {d["kind"]: d for d in yaml.safe_load_all(text) if d}
    pod = docs["Job"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "prov-weights-fill"
    (download,) = pod["initContainers"]
    (upload,) = pod["containers"]
    model = "moonshotai/Kimi-K2-Thinking"
    assert download["command"][:3] == ["hf", "download", model]
    local = value(download["command"], "--local-dir")
    assert upload["command"][:5] == ["aws", "s3", "sync", local, BUCKET]
    token = next(e for e in download["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "kimi-k2-thinking-secrets"
    # both steps see the same directory: the node's cache, mounted at the same path
    (volume,) = pod["volumes"]
    assert download["volumeMounts"] == upload["volumeMounts"]
    assert local.startswith(download["volumeMounts"][0]["mountPath"] + "/")
    assert volume["hostPath"]["path"] == "/var/lib/prov/hf-cache"
    assert {t["key"] for t in pod["tolerations"]} >= {"nvidia.com/gpu"}  # runs on the GPU pool


def test_fill_weights_needs_a_bucket_or_claim(p5en: dict[str, PlanFile]) -> None:
    with pytest.raises(UsageError, match=r"fills the bucket .* or the claim"):
        build_spec(p5en["hub"].doc, DeployOptions(fill_weights=True))
