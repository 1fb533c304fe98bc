"""Issue 16 item 1, what keeps a replacement fast: the bucket the stack creates, the image
pre-pull, vLLM's compile cache off the node, and --weights pvc.

Plans come from the real planner (Kimi-K2-Thinking int4 on one p5en.48xlarge, as in
docs/recovery.md); the stack runs under Pulumi's mocks; rendered manifests are parsed back with
the kubernetes client's models (unknown or mistyped keys fail) and the vLLM argv is checked
against vLLM v0.18.0's parser flags. Expected numbers are derived by hand in the comments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_harness import ACCOUNT, PlanFile, StackRun, k8s_model, numbers_as_ints, quote, run_stack
from test_vllm_argv import unknown_flags, value
from test_weights import KIMI_P5EN

from provisioner import fleet
from stacks.options import DeployOptions
from stacks.render import write_render
from stacks.spec import build_spec

MODEL = "moonshotai/Kimi-K2-Thinking"
#: prov-<account>-<region>-<sha256("test")[:8]>: the mocks' stack is "test", whose SHA-256
#: starts 9f86d081 (the well-known digest of "test")
CREATED = f"prov-{ACCOUNT}-us-east-1-9f86d081"


@pytest.fixture(scope="module")
def kimi(tmp_path_factory: pytest.TempPathFactory) -> PlanFile:
    return quote(tmp_path_factory.mktemp("storage"), "s3", KIMI_P5EN)  # us-east-1, s3 path


def docs_of(tmp_path: Path, plan: PlanFile, **options: Any) -> list[dict[str, Any]]:
    path = write_render(tmp_path / "out", build_spec(plan.doc, DeployOptions(**options)))
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def pod_of(docs: dict[str, dict[str, Any]]) -> Any:
    """The vLLM Deployment's pod spec, through the client's model (validates every key)."""
    return k8s_model(docs["Deployment"], "V1Deployment").spec.template.spec


def vllm(pod: Any) -> Any:
    return next(c for c in pod.containers if c.name == "vllm")


def budget(pod: Any) -> int:
    p = vllm(pod).startup_probe
    return int(p.failure_threshold * p.period_seconds)


# ---- 1. the bucket the stack creates ----------------------------------------------------------


@pytest.fixture(scope="module")
def created(kimi: PlanFile) -> dict[str, StackRun]:
    return {
        "new": run_stack(kimi, DeployOptions()),
        "again": run_stack(kimi, DeployOptions(), buckets=frozenset({CREATED})),
        "delete": run_stack(kimi, DeployOptions(keep_weights_bucket=False)),
    }


def test_the_stack_creates_a_private_encrypted_bucket_named_for_the_stack(
    created: dict[str, StackRun],
) -> None:
    run = created["new"]
    bucket = run.one("aws:s3/bucket:Bucket").inputs
    assert bucket["bucket"] == CREATED
    assert bucket["forceDestroy"] is False
    assert bucket["tags"] == {fleet.MANAGED: "true", fleet.STACK: "test"}  # stable: adoptable
    block = run.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    assert [block[f] for f in flags] == [True] * 4
    sse = run.one("aws:s3/bucketServerSideEncryptionConfiguration:"
                  "BucketServerSideEncryptionConfiguration").inputs  # fmt: skip
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    owner = run.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert owner["rule"]["objectOwnership"] == "BucketOwnerEnforced"  # ACLs off
    rules = run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs
    by_id = {r["id"]: r for r in rules["rules"]}
    assert by_id["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"] == {
        "daysAfterInitiation": 7
    }
    assert by_id["expire-compile-cache"]["filter"] == {"prefix": "cache/"}
    policy = run.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"]
    assert '"aws:SecureTransport": "false"' in policy and '"Effect": "Deny"' in policy
    # retained by default (the weights outlive `prov destroy`), settings included
    assert {"kimi-k2-thinking-weights"} <= run.retained
    assert run.one("aws:s3/bucket:Bucket").resource_id in (None, "")  # created, not adopted
    assert run.outputs["weightsBucket"][0] == f"s3://{CREATED}/{MODEL}"


def test_vllm_streams_from_the_created_bucket_which_the_nodes_may_read(
    created: dict[str, StackRun],
) -> None:
    run = created["new"]
    dep = run.one("kubernetes:apps/v1:Deployment", "kimi-k2-thinking").inputs
    (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm"]
    assert value(c["args"], "--model") == f"s3://{CREATED}/{MODEL}"
    read = next(r for r in run.of("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("-read"))
    import json

    assert json.loads(read.inputs["policy"]) == fleet.weights_read_policy(CREATED, MODEL)
    cache = run.one("aws:iam/rolePolicy:RolePolicy", "kimi-k2-thinking-compile-cache")
    want = fleet.compile_cache_policy(CREATED, f"cache/{MODEL}")
    assert json.loads(cache.inputs["policy"]) == want


def test_a_redeploy_adopts_the_retained_bucket(created: dict[str, StackRun]) -> None:
    # the same stack finds its bucket under the same name and imports it instead of failing
    # with BucketAlreadyOwnedByYou
    again = created["again"].one("aws:s3/bucket:Bucket")
    assert (again.inputs["bucket"], again.resource_id) == (CREATED, CREATED)


def test_delete_weights_bucket_deletes_it_with_the_stack(created: dict[str, StackRun]) -> None:
    run = created["delete"]
    assert run.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is True
    assert not {r for r in run.retained if "weights" in r}


def test_a_given_bucket_is_not_created(kimi: PlanFile) -> None:
    run = run_stack(kimi, DeployOptions(weights_bucket="s3://mine/kimi"))
    assert run.of("aws:s3/bucket:Bucket") == []
    assert run.outputs["weightsBucket"][0] == "s3://mine/kimi"


def test_render_cannot_name_the_created_bucket(kimi: PlanFile, tmp_path: Path) -> None:
    from provisioner.errors import UsageError

    with pytest.raises(UsageError, match="carries your AWS account id"):
        docs_of(tmp_path, kimi)


# ---- 2. the image pre-pulled on the GPU nodes ---------------------------------------------------


def test_prepull_daemonset_pulls_the_pinned_image_on_the_gpu_pool(
    kimi: PlanFile, tmp_path: Path
) -> None:
    docs = by_kind(docs_of(tmp_path, kimi, weights_bucket="s3://bkt/kimi"))
    ds = k8s_model(docs["DaemonSet"], "V1DaemonSet")
    pod = ds.spec.template.spec
    (pull,) = pod.init_containers
    assert pull.image == vllm(pod_of(docs)).image == "vllm/vllm-openai:v0.18.0"
    assert pull.command == ["/bin/true"] and pull.image_pull_policy == "IfNotPresent"
    assert [c.image for c in pod.containers] == ["registry.k8s.io/pause:3.10"]
    assert pod.node_selector == {fleet.POOL: "kimi-k2-thinking"}  # aws-eks: the stack's pool
    assert {(t.key, t.effect) for t in pod.tolerations} == {("nvidia.com/gpu", "NoSchedule")}
    # its pods are not vLLM's: neither the Service nor the PDB nor the daemon selects them
    labels = ds.spec.template.metadata.labels
    for selector in (
        docs["Service"]["spec"]["selector"],
        docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        {fleet.WORKLOAD_LABEL: fleet.WORKLOAD_VALUE},
    ):
        assert not selector.items() <= labels.items()


def test_prepull_on_your_cluster_selects_nvidia_gpu_nodes(kimi: PlanFile, tmp_path: Path) -> None:
    docs = by_kind(docs_of(tmp_path, kimi, target="kubeconfig", weights_bucket="s3://bkt/k"))
    sel = docs["DaemonSet"]["spec"]["template"]["spec"]["nodeSelector"]
    assert sel == {"nvidia.com/gpu.present": "true"}


def test_no_prepull_costs_the_image_pull_in_time_to_serve(kimi: PlanFile) -> None:
    on = build_spec(kimi.doc, DeployOptions(weights_bucket="s3://bkt/k"))
    off = build_spec(kimi.doc, DeployOptions(weights_bucket="s3://bkt/k", prepull=False))
    assert on.storage.prepull and not off.storage.prepull
    # the pull happens before the container starts: the probe budget does not move
    assert on.startup_budget_seconds == off.startup_budget_seconds == 600
    # but the time to serve the daemon decides from does: docs/recovery.md's 405.3 s + the pull,
    # 12 GB / 33.3 MB/s = 360.4 s -> 765.6 s
    assert (on.time_to_serve_seconds, off.time_to_serve_seconds) == (405, 766)


def test_prepull_in_the_stack_is_the_rendered_daemonset(kimi: PlanFile, tmp_path: Path) -> None:
    options = DeployOptions(weights_bucket="s3://bkt/kimi")
    run = run_stack(kimi, options)
    made = run.one("kubernetes:apps/v1:DaemonSet", "kimi-k2-thinking-prepull").inputs
    rendered = by_kind(docs_of(tmp_path, kimi, weights_bucket="s3://bkt/kimi"))["DaemonSet"]
    assert numbers_as_ints(made["spec"]) == rendered["spec"]


# ---- 3. vLLM's compile cache where a new node reads it ------------------------------------------


def test_s3_compile_cache_is_restored_and_saved_under_the_cache_prefix(
    kimi: PlanFile, tmp_path: Path
) -> None:
    pod = pod_of(by_kind(docs_of(tmp_path, kimi, weights_bucket="s3://bkt/kimi")))
    env = {e.name: e.value for e in vllm(pod).env}
    assert env["VLLM_CACHE_ROOT"] == "/root/.cache/vllm"  # vLLM v0.18.0 envs.py
    mounts = {m.mount_path: m.name for m in vllm(pod).volume_mounts}
    assert mounts["/root/.cache/vllm"] == "vllm-cache"
    assert {v.name: v.empty_dir is not None for v in pod.volumes}["vllm-cache"]
    (restore,) = pod.init_containers
    assert "aws s3 sync s3://bkt/cache/kimi /root/.cache/vllm" in restore.command[-1]
    save = next(c for c in pod.containers if c.name == "cache-save")
    assert "aws s3 sync /root/.cache/vllm s3://bkt/cache/kimi" in save.command[-1]
    assert "trap" in save.command[-1]  # a last sync on SIGTERM


def test_no_compile_cache_budgets_the_cold_compile(kimi: PlanFile, tmp_path: Path) -> None:
    docs = by_kind(docs_of(tmp_path, kimi, weights_bucket="s3://bkt/k", compile_cache=False))
    pod = pod_of(docs)
    assert [c.name for c in pod.containers] == ["vllm"] and pod.init_containers is None
    assert "VLLM_CACHE_ROOT" not in {e.name for e in vllm(pod).env}
    # docs/recovery.md's s3 column with a cold compile: 594.2 GB / 6.09 GB/s = 97.6 s + 60.3
    # engine + 113.2 compile + 44 graphs = 315.1 s in the container; x 2 = 630.1 -> 631 s > the
    # 600 s floor (with the cache: 225 s x 2 < 600)
    assert budget(pod) == 640  # 64 periods of 10 s
    assert {e.name: e.value for e in vllm(pod).env}["VLLM_ENGINE_READY_TIMEOUT_S"] == "631"
    with_cache = pod_of(by_kind(docs_of(tmp_path / "c", kimi, weights_bucket="s3://bkt/k")))
    assert budget(with_cache) == 600


# ---- 4. --weights pvc ---------------------------------------------------------------------------


def test_pvc_reads_the_claim_with_the_streamer(kimi: PlanFile, tmp_path: Path) -> None:
    docs = by_kind(docs_of(tmp_path, kimi, weights="pvc", weights_pvc="models-rwx"))
    assert "PersistentVolumeClaim" not in docs  # given: the user's
    pod = pod_of(docs)
    c = vllm(pod)
    argv = [*c.command, *c.args]
    assert value(argv, "--model") == f"/models/{MODEL}"
    assert value(argv, "--load-format") == "runai_streamer"
    assert value(argv, "--served-model-name") == MODEL
    assert unknown_flags(argv) == []
    claim = next(v for v in pod.volumes if v.persistent_volume_claim)
    assert claim.persistent_volume_claim.claim_name == "models-rwx"
    mounts = {m.mount_path: m for m in c.volume_mounts}
    assert mounts["/models"].read_only is True
    assert mounts["/root/.cache/vllm"].sub_path == "cache/kimi-k2-thinking"  # same claim, rw
    env = {e.name: e.value for e in c.env}
    assert env["RUNAI_STREAMER_CONCURRENCY"] == "16"  # the streamer's file-system default
    assert "AWS_DEFAULT_REGION" not in env
    # docs/recovery.md's pvc column (the table's gp3 rate): 696 s in the container x 2 = 1,392
    assert budget(pod) == 1400 and env["VLLM_ENGINE_READY_TIMEOUT_S"] == "1392"


def test_pvc_created_claim_and_its_fill_job(kimi: PlanFile, tmp_path: Path) -> None:
    docs = docs_of(tmp_path, kimi, weights="pvc", weights_storage_class="efs-sc", fill_weights=True)
    kinds = [d["kind"] for d in docs]
    assert kinds == [
        "PersistentVolumeClaim", "DaemonSet", "Job", "Deployment", "Service",
        "PodDisruptionBudget",
    ]  # fmt: skip
    pvc = k8s_model(docs[0], "V1PersistentVolumeClaim")
    assert pvc.metadata.name == "kimi-k2-thinking-weights"
    assert pvc.spec.access_modes == ["ReadWriteMany"]
    assert pvc.spec.storage_class_name == "efs-sc"
    # 594,205,305,856 B = 553.4 GiB; x 1.1 = 608.7 -> 609 + 20 = 629 GiB
    assert pvc.spec.resources.requests == {"storage": "629Gi"}
    job = k8s_model(docs[2], "V1Job").spec.template.spec
    (download,) = job.containers
    assert download.command == ["hf", "download", MODEL, "--local-dir", f"/models/{MODEL}"]
    assert job.volumes[0].persistent_volume_claim.claim_name == "kimi-k2-thinking-weights"
    assert job.service_account_name is None  # no AWS access needed


def test_pvc_read_rate_sets_the_budget(kimi: PlanFile, tmp_path: Path) -> None:
    # EFS Elastic, 1,500 MiB/s per client (Amazon EFS performance specifications) = 1.5729 GB/s:
    # 594.2 / 1.5729 = 377.8 s + 60.3 + 23.4 + 44 = 505.5 s; x 2 = 1,011 s
    pod = pod_of(by_kind(docs_of(
        tmp_path, kimi, weights="pvc", weights_pvc="w", weights_pvc_gbps=1.572864
    )))  # fmt: skip
    assert {e.name: e.value for e in vllm(pod).env}["VLLM_ENGINE_READY_TIMEOUT_S"] == "1011"


def test_pvc_in_the_stack_creates_the_claim_before_the_fill(kimi: PlanFile) -> None:
    run = run_stack(
        kimi, DeployOptions(weights="pvc", weights_storage_class="efs-sc", fill_weights=True)
    )
    claim = run.one("kubernetes:core/v1:PersistentVolumeClaim", "kimi-k2-thinking-weights")
    assert claim.inputs["spec"]["accessModes"] == ["ReadWriteMany"]
    assert run.of("aws:s3/bucket:Bucket") == [] and "weightsBucket" not in run.outputs
    assert not [r for r in run.of("aws:iam/rolePolicy:RolePolicy") if "weights" in r.name]
    # the Job waits for the claim, vLLM for the Job (Pulumi awaits a Job's completion)
    assert run.depends is not None
    assert "kimi-k2-thinking-weights" in run.depends["kimi-k2-thinking-weights-fill"]
    assert "kimi-k2-thinking-weights-fill" in run.depends["kimi-k2-thinking"]
    assert "kimi-k2-thinking-prepull" in run.depends["kimi-k2-thinking"]


def test_storage_options_round_trip_through_stack_config_and_go_stale() -> None:
    from stacks.automation import _OPTIONAL_KEYS

    options = DeployOptions(
        weights="pvc", weights_storage_class="efs-sc", weights_pvc_gbps=1.572864,
        keep_weights_bucket=False, prepull=False, compile_cache=True, fill_weights=True,
    )  # fmt: skip
    config = options.to_config()
    assert DeployOptions.from_config(lambda k: config.get(f"prov:{k}")) == options
    # every key a deploy may leave out is removed from the stack's config when it does
    assert set(config) - set(DeployOptions().to_config()) <= set(_OPTIONAL_KEYS)


def test_fill_writes_the_created_bucket(kimi: PlanFile) -> None:
    import json

    run = run_stack(kimi, DeployOptions(fill_weights=True))
    fill = run.one("aws:iam/rolePolicy:RolePolicy", "kimi-k2-thinking-weights-fill")
    assert json.loads(fill.inputs["policy"]) == fleet.weights_fill_policy(CREATED, MODEL)
    job = run.one("kubernetes:batch/v1:Job", "kimi-k2-thinking-weights-fill").inputs
    (upload,) = job["spec"]["template"]["spec"]["containers"]
    assert upload["command"][:5] == [
        "aws", "s3", "sync", f"/fill/fill/{MODEL}", f"s3://{CREATED}/{MODEL}",
    ]  # fmt: skip
    # the bucket and the policies exist before anything in the cluster uses them: the
    # Secret waits for them, and the Job, the DaemonSet and vLLM wait for the Secret
    assert run.depends is not None
    before_secret = run.depends["kimi-k2-thinking-secrets"]
    assert {"kimi-k2-thinking-weights", "kimi-k2-thinking-weights-read"} <= set(before_secret)
    assert "kimi-k2-thinking-weights-fill" in before_secret  # the fill role's association
    assert "kimi-k2-thinking-secrets" in run.depends["kimi-k2-thinking-weights-fill"]
