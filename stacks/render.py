"""`prov deploy --render DIR`: the manifests of stacks/manifests.py as one YAML file.

No Pulumi and no cluster: for review or `kubectl apply -f DIR`. The file is written atomically
(temp file + os.replace), so DIR never holds half a render. Secrets are never written: the
header says how to create them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType

from provisioner.errors import OperationalError, UsageError
from provisioner.fileio import write_atomic
from stacks.manifests import SECRET_KEYS, build_manifests, secret_name
from stacks.prepull import before_workload, prepull_name
from stacks.spec import DeploySpec
from stacks.weights_fill import job_name


def _yaml() -> ModuleType:
    try:
        import yaml
    except ImportError:
        raise OperationalError("--render needs PyYAML: pip install 'prov[deploy]'") from None
    return yaml


def header(spec: DeploySpec) -> str:
    p = spec.plan
    keys = " ".join(f"--from-literal={k}=..." for k in SECRET_KEYS)
    lines = [
        f"Rendered by prov deploy --render: {spec.model_id}, plan rank {p.rank}",
        f"{p.nodes} x {p.instance_type} ({p.gpus_per_node} x {p.gpu}), {spec.layout}, "
        f"{p.market}, {p.cloud} {p.region}",
        "Before applying, create the secret (both keys optional; without VLLM_API_KEY the API",
        "is open to anything that can reach the Service):",
        f"  kubectl -n {spec.namespace} create secret generic {secret_name(spec)} {keys}",
    ]
    if spec.multi_node:
        lines.append("Needs the LeaderWorkerSet controller (leaderworkerset.x-k8s.io/v1).")
    if spec.gpu_resource == "amd.com/gpu":
        lines.append(
            "AMD GPUs: needs the amd.com/gpu device plugin (github.com/ROCm/k8s-device-plugin)."
        )
    if spec.weights == "pvc":
        claim = spec.claim_name
        made = "created here" if spec.storage.storage_class else "yours, ReadWriteMany"
        lines.append(f"Weights: claim {claim} ({made}), read at {spec.model_path}.")
    if spec.storage.prepull:
        lines.append(
            f"DaemonSet {prepull_name(spec)} pre-pulls {spec.image} on the GPU nodes "
            "(--no-prepull: off)."
        )
    if spec.cache_prefix is not None:
        lines.append(
            f"vLLM's compile cache: restored from and saved to s3://{spec.weights_bucket}/"
            f"{spec.cache_prefix} (needs read/write there; --no-compile-cache: off)."
        )
    if spec.fill_weights:
        where = "the claim" if spec.weights == "pvc" else "the bucket"
        lines += [
            f"--fill-weights: the Job fills {where} from the Hub. vLLM restarts until it is full:",
            "apply everything before the vLLM workload, wait for the Job, then the rest:",
            f"  kubectl -n {spec.namespace} wait --for=condition=complete --timeout=6h "
            f"job/{job_name(spec)}",
        ]
        if spec.weights == "s3":
            lines.append(
                "Its ServiceAccount needs write access to the prefix (the stack binds it with "
                "EKS Pod Identity)."
            )
    if spec.target == "aws-eks":
        lines.append("Pods select nodes labelled prov/pool=" + spec.name + " (the stack's pool).")
    return "".join(f"# {line}\n" for line in lines)


def render_yaml(spec: DeploySpec) -> str:
    if spec.weights == "s3" and spec.weights_bucket is None:
        raise UsageError(
            "--render cannot name the bucket the aws-eks stack creates (its name carries your "
            "AWS account id): pass --weights-bucket s3://BUCKET[/PREFIX], or deploy"
        )
    yaml = _yaml()
    docs = [
        yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)
        for obj in [*before_workload(spec), *build_manifests(spec)]
    ]
    return header(spec) + "---\n" + "---\n".join(docs)


_SEAL = "# prov-render sha256="


def seal(text: str) -> str:
    """The text with a last comment line holding its digest: how prov knows its own files."""
    return f"{text}{_SEAL}{hashlib.sha256(text.encode()).hexdigest()}\n"


def written_by_prov(path: Path) -> bool:
    """True when `path` is a render of prov's that nobody has edited since."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    body, _, last = text.rstrip("\n").rpartition("\n")
    return last.startswith(_SEAL) and seal(body + "\n") == text


def write_render(directory: Path, spec: DeploySpec, *, force: bool = False) -> Path:
    """Write DIR/<name>.yaml atomically and return its path.

    An existing file is replaced only when prov wrote it and nobody edited it since, or with
    `force`: a hand-edited manifest is never lost silently.
    """
    text = seal(render_yaml(spec))
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--render {directory}: exists and is not a directory")
    path = directory / f"{spec.name}.yaml"
    if (path.exists() or path.is_symlink()) and not force and not written_by_prov(path):
        raise UsageError(
            f"--render {directory}: {path.name} exists and was not written by prov (or was "
            "edited since); move it away, choose another directory or --name, or pass --force"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text, mode=0o644)
    except OSError as e:
        raise OperationalError(f"--render {directory}: cannot write ({e.strerror or e})") from None
    return path
