"""The user's choices on top of a plan (`prov deploy`'s flags), round-tripped through the Pulumi
stack config so that the program (stacks/program.py) sees what the CLI was given. Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from provisioner.core.vllm_rules import VLLM_VERSION
from provisioner.errors import UsageError

#: The one vLLM image tag prov deploys. v0.18.0 is the first release with --shutdown-timeout
#: (vllm-project/vllm#34730), which the drain depends on; multi-node without Ray
#: (--nnodes/--node-rank/--master-addr/--headless, vllm-project/vllm#23691) and every flag the
#: planner emits are older. Override per deploy with --image.
VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"  # the one version constant
#: The daemon's image, built from docker/daemon.Dockerfile (push it and pass --daemon-image).
DAEMON_IMAGE = "ghcr.io/prov-dev/prov-daemon:0.1.0"
#: 15 + 90 + 15 = 120 s: the whole shutdown fits in AWS's two-minute spot notice.
DEFAULT_DRAIN_SECONDS = 90


@dataclass(frozen=True)
class DeployOptions:
    """The user's choices on top of the plan; round-trips through Pulumi stack config."""

    rank: int = 1
    target: str = "auto"  # auto: aws-eks for an AWS plan, kubeconfig otherwise
    name: str | None = None  # default: from the model id
    namespace: str = "default"
    public: bool = False
    drain_seconds: int = DEFAULT_DRAIN_SECONDS
    image: str = VLLM_IMAGE
    kube_context: str | None = None
    daemon: str = "queue"  # aws-eks: the interruption daemon's mode: queue | imds | none
    daemon_image: str = DAEMON_IMAGE
    weights: str | None = None  # s3 | hub | pvc; None: the plan's request.weights
    weights_bucket: str | None = None  # s3://BUCKET[/PREFIX] holding the checkpoint
    fill_weights: bool = False  # s3/pvc: a one-shot Job fills the bucket or claim first
    keep_weights_bucket: bool | None = None  # a created bucket: retain (default) or delete
    weights_pvc: str | None = None  # pvc: an existing ReadWriteMany claim
    weights_storage_class: str | None = None  # pvc: create the claim with this class
    weights_pvc_gbps: float | None = None  # pvc: the volume's read rate per node, GB/s
    prepull: bool | None = None  # the image pre-pull DaemonSet; None: on for s3/pvc
    compile_cache: bool | None = None  # vLLM's compile cache off the node; None: s3/pvc

    def to_config(self) -> dict[str, str]:
        """Stack config values (namespace `prov`), as strings."""
        out = {
            "prov:rank": str(self.rank),
            "prov:target": self.target,
            "prov:namespace": self.namespace,
            "prov:public": "true" if self.public else "false",
            "prov:drainSeconds": str(self.drain_seconds),
            "prov:image": self.image,
            "prov:daemon": self.daemon,
            "prov:daemonImage": self.daemon_image,
        }
        if self.name:
            out["prov:name"] = self.name
        if self.kube_context:
            out["prov:kubeContext"] = self.kube_context
        if self.weights:
            out["prov:weights"] = self.weights
        if self.weights_bucket:
            out["prov:weightsBucket"] = self.weights_bucket
        if self.fill_weights:
            out["prov:fillWeights"] = "true"
        for key, flag in (
            ("keepWeightsBucket", self.keep_weights_bucket),
            ("prepull", self.prepull),
            ("compileCache", self.compile_cache),
        ):
            if flag is not None:
                out[f"prov:{key}"] = "true" if flag else "false"
        if self.weights_pvc:
            out["prov:weightsPvc"] = self.weights_pvc
        if self.weights_storage_class:
            out["prov:weightsStorageClass"] = self.weights_storage_class
        if self.weights_pvc_gbps is not None:
            out["prov:weightsPvcGbps"] = repr(self.weights_pvc_gbps)
        return out

    @classmethod
    def from_config(cls, get: Callable[[str], str | None]) -> DeployOptions:
        """Read back what `to_config` wrote; `get("rank")` returns the value or None."""

        def num(key: str, default: int) -> int:
            text = get(key)
            try:
                return int(text) if text is not None else default
            except ValueError:
                raise UsageError(f"stack config prov:{key} is not an integer: {text!r}") from None

        def flag(key: str) -> bool | None:
            text = get(key)
            return None if text is None else text.lower() == "true"

        def rate(key: str) -> float | None:
            text = get(key)
            try:
                return float(text) if text is not None else None
            except ValueError:
                raise UsageError(f"stack config prov:{key} is not a number: {text!r}") from None

        return cls(
            rank=num("rank", 1),
            target=get("target") or "auto",
            name=get("name") or None,
            namespace=get("namespace") or "default",
            public=(get("public") or "false").lower() == "true",
            drain_seconds=num("drainSeconds", DEFAULT_DRAIN_SECONDS),
            image=get("image") or VLLM_IMAGE,
            kube_context=get("kubeContext") or None,
            daemon=get("daemon") or "queue",
            daemon_image=get("daemonImage") or DAEMON_IMAGE,
            weights=get("weights") or None,
            weights_bucket=get("weightsBucket") or None,
            fill_weights=(get("fillWeights") or "false").lower() == "true",
            keep_weights_bucket=flag("keepWeightsBucket"),
            weights_pvc=get("weightsPvc") or None,
            weights_storage_class=get("weightsStorageClass") or None,
            weights_pvc_gbps=rate("weightsPvcGbps"),
            prepull=flag("prepull"),
            compile_cache=flag("compileCache"),
        )
