"""The one-shot Job that fills the weights bucket or claim from the Hugging Face Hub
(--fill-weights).

--weights pvc: one step, ``hf download MODEL --local-dir /models/MODEL`` straight into the
claim (read-write here, read-only in the vLLM pods), resumable the same way.

--weights s3: two steps on one node of the GPU pool (its root volume is sized for the weights,
stacks/gpu_node_pool.py), sharing the node's Hub cache directory:

1. ``hf download MODEL --local-dir DIR`` in the vLLM image (huggingface_hub's CLI), with the
   HF token from the deployment's Secret. Files already complete in DIR are skipped, so a
   retried pod resumes; the CLI logs its progress per file.
2. ``aws s3 sync DIR s3://BUCKET/PREFIX`` in the AWS CLI image: uploads only what the prefix
   lacks (resumable) and logs each file it uploads.

Credentials: the Job's own ServiceAccount, which the stack binds to a write role on the prefix
only (EKS Pod Identity; provisioner/fleet.py WEIGHTS_FILL_CALLS). The vLLM pods keep read-only
access. Pure: no Pulumi, no Kubernetes client.
"""

from __future__ import annotations

from provisioner import fleet
from stacks.manifests import HOST_CACHE_PATH, Manifest, common_labels, secret_name
from stacks.model_storage import AWS_CLI_IMAGE
from stacks.spec import MODELS_MOUNT, DeploySpec

WORK = "/fill"  # the node's Hub cache directory, mounted in both containers
RETRIES = 6  # pod restarts before the Job fails; each restart resumes where it stopped


def job_name(spec: DeploySpec) -> str:
    return f"{spec.name}-weights-fill"


def local_dir(spec: DeploySpec) -> str:
    return f"{WORK}/fill/{spec.model_id}"


def service_account(spec: DeploySpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": fleet.WEIGHTS_FILL_SERVICE_ACCOUNT,
            "namespace": spec.namespace,
            "labels": common_labels(spec),
        },
    }


def _token(spec: DeploySpec) -> Manifest:
    return {
        "name": "HF_TOKEN",
        "valueFrom": {
            "secretKeyRef": {"name": secret_name(spec), "key": "HF_TOKEN", "optional": True}
        },
    }


def _pvc_pod(spec: DeploySpec) -> Manifest:
    """--weights pvc: download into the claim, where vLLM reads the model path."""
    path = spec.model_path
    assert spec.claim_name is not None and path is not None
    download: Manifest = {
        "name": "download",
        "image": spec.image,
        "command": ["hf", "download", spec.model_id, "--local-dir", path],
        "env": [_token(spec)],
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT}],
    }
    return {
        "containers": [download],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": spec.claim_name}}],
    }


def fill_job(spec: DeploySpec) -> Manifest:
    """The Job; for ``--weights s3`` (the bucket and prefix are the model path's) or ``pvc``."""
    pod: Manifest = {
        "restartPolicy": "OnFailure",
        "tolerations": [
            {"key": key, "operator": "Exists", "effect": fleet.GPU_TAINT_EFFECT}
            for key in dict.fromkeys((fleet.GPU_TAINT_KEY, spec.gpu_resource))
        ],
    }
    pod |= _pvc_pod(spec) if spec.weights == "pvc" else _s3_pod(spec)
    if spec.target == "aws-eks":
        pod["nodeSelector"] = {fleet.POOL: spec.name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec),
            "namespace": spec.namespace,
            "labels": common_labels(spec),
        },
        "spec": {"backoffLimit": RETRIES, "template": {"spec": pod}},
    }


def _s3_pod(spec: DeploySpec) -> Manifest:
    """--weights s3: download to the node's cache, then sync it to the bucket's prefix."""
    uri = spec.weights_uri
    if uri is None:
        raise ValueError("the fill Job needs --weights s3 with a bucket")
    mount = [{"name": "hub-cache", "mountPath": WORK}]
    token = _token(spec)
    download: Manifest = {
        "name": "download",
        "image": spec.image,
        "command": ["hf", "download", spec.model_id, "--local-dir", local_dir(spec)],
        "env": [token, {"name": "HF_HOME", "value": f"{WORK}/home"}],
        "volumeMounts": mount,
    }
    upload: Manifest = {
        "name": "upload",
        "image": AWS_CLI_IMAGE,
        # the download's bookkeeping (.cache/) stays on the node
        "command": ["aws", "s3", "sync", local_dir(spec), uri, "--exclude", ".cache/*"],
        "env": [{"name": "AWS_DEFAULT_REGION", "value": spec.plan.region}]
        if spec.plan.cloud == "aws"
        else [],
        "volumeMounts": mount,
    }
    return {
        "serviceAccountName": fleet.WEIGHTS_FILL_SERVICE_ACCOUNT,
        "initContainers": [download],
        "containers": [upload],
        "volumes": [
            {
                "name": "hub-cache",
                "hostPath": {"path": HOST_CACHE_PATH, "type": "DirectoryOrCreate"},
            }
        ],
    }


def build_fill_manifests(spec: DeploySpec) -> list[Manifest]:
    """The fill Job and its ServiceAccount, or nothing (no --fill-weights)."""
    if not spec.fill_weights:
        return []
    if spec.weights == "pvc":  # no AWS credentials needed: the claim is mounted
        return [fill_job(spec)]
    return [service_account(spec), fill_job(spec)]
