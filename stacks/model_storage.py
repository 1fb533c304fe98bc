"""The parts of a vLLM pod that depend on where the weights and the compile cache live. Pure.

* ``--weights s3``: vLLM streams ``s3://BUCKET/PREFIX`` with the Run:ai streamer; its S3 client
  reads the region and the concurrency from the environment.
* ``--weights pvc``: the claim is mounted read-only at ``/models``; vLLM streams the local
  directory ``/models/<model id>`` with the same loader (the streamer reads files too).
* **compile cache** (``--compile-cache``, on by default for s3 and pvc): vLLM keeps its
  torch.compile artifacts under ``VLLM_CACHE_ROOT`` (default ``~/.cache/vllm``; vLLM v0.18.0
  ``envs.py``), in ``torch_compile_cache/<hash>/rank_<r>_<dp>/``; the hash covers the vLLM
  config, the traced code and the compiler, so an entry is reused only by the same image, model,
  flags and layout (``compilation/backends.py``), and vLLM's torch.compile blog (2025-08-20)
  says to "generate the cache directory once and share it among instances". CUDA graphs are
  captured at every start (not cached). Kept off the node so that a replacement reads it:

  - s3: ``VLLM_CACHE_ROOT`` is an emptyDir; an init container restores it from
    ``s3://BUCKET/cache/PREFIX`` (``aws s3 sync``, a miss only means a cold compile) and a
    sidecar syncs new entries back every ``CACHE_SYNC_SECONDS`` (the node role may read and
    write that prefix only: provisioner/fleet.py COMPILE_CACHE_CALLS);
  - pvc: ``VLLM_CACHE_ROOT`` is a read-write ``subPath`` of the same claim (``cache/<name>``).
"""

from __future__ import annotations

from typing import Any

from stacks.spec import MODELS_MOUNT, DeploySpec

Manifest = dict[str, Any]

#: AWS CLI v2's official image (gallery.ecr.aws/aws-cli/aws-cli), pinned.
AWS_CLI_IMAGE = "public.ecr.aws/aws-cli/aws-cli:2.27.50"
#: VLLM_CACHE_ROOT in the pods: vLLM's default for root (~/.cache/vllm), set explicitly
CACHE_ROOT = "/root/.cache/vllm"
CACHE_SYNC_SECONDS = 120  # the first compile finishes within minutes of the start
#: RUNAI_STREAMER_CONCURRENCY: the streamer's own defaults, 8 for object storage and 16 for a
#: file system (run-ai/runai-model-streamer docs/src/env-vars.md), rendered so a review sees and
#: can tune them (docs/time-to-serve-sources.md 2.2)
STREAMER_CONCURRENCY = {"s3": 8, "pvc": 16}
_SIDECAR_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "512Mi"},
}


def weights_env(spec: DeploySpec) -> list[Manifest]:
    """Environment of the vLLM container for the weight path and the compile cache."""
    env: list[Manifest] = []
    if spec.model_path is not None:
        concurrency = STREAMER_CONCURRENCY[spec.weights]
        env.append({"name": "RUNAI_STREAMER_CONCURRENCY", "value": str(concurrency)})
    if spec.weights_uri is not None and spec.plan.cloud == "aws":
        # the streamer's S3 client (a boto3 session: node role / IRSA credentials) reads the
        # bucket in the plan's region; elsewhere the bucket's region is the user's to set
        env.append({"name": "AWS_DEFAULT_REGION", "value": spec.plan.region})
    if spec.storage.compile_cache:
        env.append({"name": "VLLM_CACHE_ROOT", "value": CACHE_ROOT})
    return env


def weights_volumes(spec: DeploySpec) -> list[Manifest]:
    volumes: list[Manifest] = []
    if spec.claim_name is not None:
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": spec.claim_name}})
    if spec.cache_prefix is not None:
        volumes.append({"name": "vllm-cache", "emptyDir": {}})
    return volumes


def weights_mounts(spec: DeploySpec) -> list[Manifest]:
    """Mounts of the vLLM container: the claim read-only, the compile cache read-write."""
    mounts: list[Manifest] = []
    if spec.claim_name is not None:
        mounts.append({"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True})
        if spec.storage.compile_cache:
            mounts.append(
                {"name": "models", "mountPath": CACHE_ROOT, "subPath": f"cache/{spec.name}"}
            )
    if spec.cache_prefix is not None:
        mounts.append({"name": "vllm-cache", "mountPath": CACHE_ROOT})
    return mounts


def _cache_uri(spec: DeploySpec) -> str:
    return f"s3://{spec.weights_bucket}/{spec.cache_prefix}"


def _aws_env(spec: DeploySpec) -> list[Manifest]:
    return (
        [{"name": "AWS_DEFAULT_REGION", "value": spec.plan.region}]
        if spec.plan.cloud == "aws"
        else []
    )


def _aws_cli(spec: DeploySpec, name: str, script: str, mount: Manifest) -> Manifest:
    """A container of the AWS CLI image running `script` with the compile-cache volume."""
    return {
        "name": name,
        "image": AWS_CLI_IMAGE,
        "command": ["/bin/sh", "-c", script],
        "env": _aws_env(spec),
        "resources": _SIDECAR_RESOURCES,
        "volumeMounts": [mount],
    }


def cache_init_containers(spec: DeploySpec) -> list[Manifest]:
    """s3 + compile cache: restore the cache before vLLM starts (a miss is not an error)."""
    if spec.cache_prefix is None:
        return []
    script = (
        f"aws s3 sync {_cache_uri(spec)} {CACHE_ROOT} --only-show-errors "
        "&& echo 'compile cache restored' || echo 'no compile cache restored: cold compile'"
    )
    return [
        _aws_cli(spec, "cache-restore", script, {"name": "vllm-cache", "mountPath": CACHE_ROOT})
    ]


def cache_sidecars(spec: DeploySpec) -> list[Manifest]:
    """s3 + compile cache: sync what this pod compiled back to the bucket, every few minutes
    and once more on shutdown (SIGTERM ends the wait, the trap syncs and exits)."""
    if spec.cache_prefix is None:
        return []
    sync = f"aws s3 sync {CACHE_ROOT} {_cache_uri(spec)} --only-show-errors"
    script = (
        f"trap '{sync}; exit 0' TERM; "
        f"while true; do sleep {CACHE_SYNC_SECONDS} & wait $!; {sync}; done"
    )
    mount = {"name": "vllm-cache", "mountPath": CACHE_ROOT, "readOnly": True}
    return [_aws_cli(spec, "cache-save", script, mount)]
