"""What to deploy: one plan of a `prov quote --json` document plus the deploy options.

`prov deploy --render` and the Pulumi program (stacks/program.py) both build a DeploySpec with
`build_spec`, and both hand it to stacks/manifests.py: that is why the rendered YAML and the
Pulumi resources cannot drift apart. Pure: no Pulumi and no Kubernetes client here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provisioner.contract.document import Plan, PlanDocument
from provisioner.core.offer import Offer
from provisioner.core.vllm_rules import VLLM_VERSION
from provisioner.errors import UsageError
from stacks.instances import NodeShape, alternatives, efa_capable, other_zone

#: The one vLLM image tag prov deploys. v0.18.0 is the first release with --shutdown-timeout
#: (vllm-project/vllm#34730), which the drain below depends on; multi-node without Ray
#: (--nnodes/--node-rank/--master-addr/--headless, vllm-project/vllm#23691) and every flag the
#: planner emits are older. Override per deploy with --image.
VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"  # the one version constant
#: The same release of vLLM's ROCm image, for AMD GPUs (vllm-project publishes
#: vllm/vllm-openai-rocm:vX.Y.Z per release; see vllm-project/recipes, e.g. GLM/GLM.md).
VLLM_ROCM_IMAGE = f"vllm/vllm-openai-rocm:v{VLLM_VERSION}"

TARGETS = ("aws-eks", "kubeconfig")
DAEMON_MODES = ("queue", "imds", "none")
#: The daemon's image, built from docker/daemon.Dockerfile (push it and pass --daemon-image).
DAEMON_IMAGE = "ghcr.io/prov-dev/prov-daemon:0.1.0"
PORT = 8000
MASTER_PORT = 29500  # torch.distributed rendezvous on the leader (multi-node)

# Shutdown: preStop sleep, then SIGTERM, then vLLM drains for --shutdown-timeout seconds.
PRE_STOP_SECONDS = 15  # Service endpoints and load balancers stop sending before SIGTERM
EXIT_MARGIN_SECONDS = 15  # engine and worker teardown after the drain
#: 15 + 90 + 15 = 120 s: the whole shutdown fits in AWS's two-minute spot notice.
DEFAULT_DRAIN_SECONDS = 90
MAX_DRAIN_SECONDS = 3600

# Startup: the probe budget is the plan's time to serve (provisioner/core/time_to_serve.py), the
# same number the quote prices; see docs/recovery.md.
PROBE_PERIOD_SECONDS = 10
#: Weight paths the deploy renders: s3 (vLLM streams from an in-region bucket) and hub
#: (download from the Hugging Face Hub into the node's cache). pvc is modelled, not rendered.
DEPLOY_WEIGHTS = ("s3", "hub")
#: vLLM's loader for s3:// model paths (Run:ai Model Streamer; vLLM v0.18.0 config/load.py).
S3_LOAD_FORMAT = "runai_streamer"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3 bucket naming rules

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 40  # LeaderWorkerSet pod names append -<group>-<worker>; stay well under 63

#: Availability zones where EKS refuses control-plane subnets (UnsupportedAvailabilityZone-
#: Exception; EKS user guide, "Create an Amazon EKS cluster": use1-az3, usw1-az2, cac1-az3).
#: GPU nodes may still run there; only the cluster's own subnets avoid them.
EKS_UNSUPPORTED_ZONES = frozenset({"use1-az3", "usw1-az2", "cac1-az3"})


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
    weights: str | None = None  # s3 | hub; None: the plan's request.weights
    weights_bucket: str | None = None  # s3://BUCKET[/PREFIX] holding the checkpoint
    fill_weights: bool = False  # s3: a one-shot Job fills the bucket from the Hub first

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
        )


@dataclass(frozen=True)
class DeploySpec:
    """Everything the manifests and the AWS resources are computed from."""

    name: str
    namespace: str
    target: str
    plan: Plan
    model_id: str
    weight_bytes: int  # exact from the plan, or params_total x 2 bytes when it is missing
    image: str
    public: bool
    drain_seconds: int
    node: NodeShape | None  # CPU/RAM of the node, None when the snapshot does not know it
    instance_types: tuple[str, ...]  # the plan's first (AWS pool)
    zones: tuple[str, ...]  # where the GPU pool may launch (AWS), the plan's first
    vpc_zones: tuple[str, ...]  # the pool's zones plus more when EKS needs two it supports
    gpu_resource: str = "nvidia.com/gpu"  # amd.com/gpu on AMD (provisioner/core/deployable.py)
    weights: str = "hub"  # the weight path rendered: s3 or hub
    weights_bucket: str | None = None  # s3: the bucket name
    weights_prefix: str = ""  # s3: the key prefix of the checkpoint (no slashes at the ends)
    #: time_to_serve(...).startup_probe_budget_s of the plan on this weight path
    startup_budget_seconds: int = 600
    #: time_to_serve(...).prewarm(spot notice): a replacement cannot be ready within the
    #: notice, so the daemon starts it on the rebalance recommendation (docs/recovery.md)
    prewarm_on_rebalance: bool = False
    #: the same time_to_serve(...).total_s, passed to the daemon (--time-to-serve): its own
    #: prewarm, spare and early-shedding decisions follow from it (docs/recovery.md)
    time_to_serve_seconds: int | None = None
    fill_weights: bool = False  # render/apply the fill Job (stacks/weights_fill.py)

    @property
    def weights_uri(self) -> str | None:
        """The s3:// model path vLLM streams from, or None (hub)."""
        if self.weights != "s3" or self.weights_bucket is None:
            return None
        return f"s3://{self.weights_bucket}/{self.weights_prefix}".rstrip("/")

    @property
    def multi_node(self) -> bool:
        return self.plan.nodes > 1

    @property
    def uses_efa(self) -> bool:
        """Multi-node on an EFA fabric: every type of the pool has an EFA (build_spec)."""
        return self.multi_node and self.plan.fabric == "efa"

    @property
    def control_plane_zones(self) -> tuple[str, ...]:
        """The VPC's zones EKS accepts for its control-plane subnets (at least two)."""
        return tuple(z for z in self.vpc_zones if z not in EKS_UNSUPPORTED_ZONES)

    @property
    def startup_failure_threshold(self) -> int:
        return math.ceil(self.startup_budget_seconds / PROBE_PERIOD_SECONDS)

    @property
    def grace_seconds(self) -> int:
        """terminationGracePeriodSeconds: preStop + drain + teardown."""
        return PRE_STOP_SECONDS + self.drain_seconds + EXIT_MARGIN_SECONDS

    @property
    def serve_args(self) -> list[str]:
        """`vllm serve` flags every pod of the replica shares: the plan's, then prov's."""
        args = list(self.plan.vllm_args)
        uri = self.weights_uri
        if uri is not None:  # stream from the bucket; clients still ask for the model id
            if "--model" in args[:-1]:
                args[args.index("--model") + 1] = uri
            else:
                args = ["--model", uri, *args]
            args += ["--load-format", S3_LOAD_FORMAT]
            if "--served-model-name" not in args:
                args += ["--served-model-name", self.model_id]
        if "--kv-cache-dtype" not in args:
            args += ["--kv-cache-dtype", "auto"]  # explicit, so a review shows it
        return [*args, "--shutdown-timeout", str(self.drain_seconds)]


def select_plan(doc: PlanDocument, rank: int) -> Plan:
    """The plan with this rank, or a UsageError naming the ranks the file has."""
    if not doc.plans:
        raise UsageError("the plan file has no plans (nothing fit); quote again with other limits")
    for plan in doc.plans:
        if plan.rank == rank:
            return plan
    ranks = [p.rank for p in doc.plans]
    have = f"{ranks[0]}..{ranks[-1]}" if ranks == list(range(ranks[0], ranks[-1] + 1)) else ranks
    raise UsageError(f"--rank {rank}: no such plan in the file (it has ranks {have})")


def release_name(model_id: str) -> str:
    """A DNS-1035 label from the model id: moonshotai/Kimi-K2-Thinking -> kimi-k2-thinking."""
    base = re.sub(r"[^a-z0-9]+", "-", model_id.rsplit("/", 1)[-1].lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"m-{base}".rstrip("-")
    return base[:MAX_NAME].rstrip("-")


def _arg(args: Sequence[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def _check_args(plan: Plan) -> None:
    if not plan.vllm_args:
        raise UsageError(
            f"rank {plan.rank} has no vLLM arguments (its engine is not vLLM); prov deploy runs "
            "vLLM only: pick a vLLM plan with --rank"
        )
    shape = [("--tensor-parallel-size", plan.tp), ("--pipeline-parallel-size", plan.pp)]
    if plan.dp > 1 or "--data-parallel-size" in plan.vllm_args:
        shape.append(("--data-parallel-size", plan.dp))
    if plan.ep != ("--enable-expert-parallel" in plan.vllm_args):
        raise UsageError(
            f"rank {plan.rank}: the plan says ep={str(plan.ep).lower()} but its vllm_args "
            f"{'lack' if plan.ep else 'carry'} --enable-expert-parallel; quote again"
        )
    for flag, want in shape:
        got = _arg(plan.vllm_args, flag)
        if (got is not None or flag == "--data-parallel-size") and got != str(want):
            raise UsageError(
                f"rank {plan.rank}: vllm_args say {flag} {got} but the plan's shape says {want}; "
                "the file was edited by hand: quote again"
            )


def _resolve_target(target: str, plan: Plan) -> str:
    if target == "auto":
        return "aws-eks" if plan.cloud == "aws" else "kubeconfig"
    if target not in TARGETS:
        raise UsageError(f"unknown --target {target!r}; allowed: auto, {', '.join(TARGETS)}")
    if target == "aws-eks" and plan.cloud != "aws":
        raise UsageError(
            f"--target aws-eks needs an AWS plan, rank {plan.rank} is on {plan.cloud}; pick an "
            "AWS rank with --rank or deploy into your own cluster with --target kubeconfig"
        )
    if target == "aws-eks" and not plan.zone:
        raise UsageError(f"rank {plan.rank} has no availability zone; AWS plans carry one")
    return target


def _check_deployable(doc: PlanDocument, plan: Plan, target: str) -> None:
    """The rule quote marks plans with (provisioner/core/deployable.py), as a refusal that says
    what to do instead."""
    from provisioner.core.deployable import DeployFacts, not_deployable_reason

    facts = DeployFacts(plan.cloud, plan.gpu, plan.zone, bool(plan.vllm_args))
    reason = not_deployable_reason(facts, target)
    if reason is not None:
        raise UsageError(f"rank {plan.rank}: {reason}; {deployable_hint(doc, target)}")


def deployable_hint(doc: PlanDocument, target: str = "auto") -> str:
    """What gives a plan prov deploy can run: another rank of the file, or a new quote."""
    from provisioner.core.deployable import DeployFacts, not_deployable_reason

    ok = [
        p.rank
        for p in doc.plans
        if not_deployable_reason(DeployFacts(p.cloud, p.gpu, p.zone, bool(p.vllm_args)), target)
        is None
    ]
    if ok:
        return f"deployable ranks in this file: {', '.join(map(str, ok[:5]))} (--rank N)"
    r = doc.request
    gguf = r.quant.lower().startswith(("q", "iq"))  # llama.cpp plans: quote a vLLM format
    quant = "auto" if gguf else r.quant
    gpu = " --gpu nvidia" if not gguf else ""
    return (
        f"for a plan prov deploy can run: prov quote --model {r.model} --quant {quant} "
        f"--ctx {r.ctx}{gpu} --json > plan.json"
    )


def build_spec(
    doc: PlanDocument, options: DeployOptions, offers: Sequence[Offer] | None = None
) -> DeploySpec:
    """Check the plan and the options and derive everything the stacks need (UsageError)."""
    plan = select_plan(doc, options.rank)
    target = _resolve_target(options.target, plan)
    _check_deployable(doc, plan, target)
    _check_args(plan)
    name = options.name or release_name(doc.model.id)
    if len(name) > MAX_NAME or not _DNS_LABEL.match(name):
        raise UsageError(
            f"--name {name!r}: use lowercase letters, digits and '-', starting with a letter, "
            f"at most {MAX_NAME} characters"
        )
    if len(options.namespace) > 63 or not _DNS_LABEL.match(options.namespace):
        raise UsageError(f"--namespace {options.namespace!r} is not a Kubernetes namespace name")
    if not 0 <= options.drain_seconds <= MAX_DRAIN_SECONDS:
        raise UsageError(f"--drain-seconds {options.drain_seconds}: must be 0..{MAX_DRAIN_SECONDS}")
    if options.daemon not in DAEMON_MODES:
        raise UsageError(f"--daemon {options.daemon!r}: allowed: {', '.join(DAEMON_MODES)}")
    if not options.image.strip():
        raise UsageError("--image is empty")
    from provisioner.core.deployable import GPU_RESOURCE, gpu_vendor

    vendor = gpu_vendor(plan.gpu) or "NVIDIA"
    image = options.image.strip()
    if vendor == "AMD" and image == VLLM_IMAGE:
        image = VLLM_ROCM_IMAGE  # the default image, in its ROCm build
    if offers is None:
        from pricing.offers import load_offers

        offers = load_offers()
    # A cluster placement group lives in one zone, so a multi-node pool stays in the plan's.
    alt = alternatives(plan, offers, single_zone=plan.nodes > 1)
    instance_types = alt.instance_types
    if plan.nodes > 1 and plan.fabric == "efa":
        # the launch template carries an EFA interface: a type without one would not launch
        instance_types = tuple(t for t in instance_types if efa_capable(t))
        if not instance_types:
            raise UsageError(
                f"rank {plan.rank} spans nodes over EFA but {plan.instance_type} has no EFA "
                "interface; pick another rank"
            )
    vpc_zones = alt.zones
    while target == "aws-eks" and sum(z not in EKS_UNSUPPORTED_ZONES for z in vpc_zones) < 2:
        extra = other_zone(plan, offers, (*vpc_zones, *EKS_UNSUPPORTED_ZONES))
        if extra is None:
            raise UsageError(
                f"EKS needs subnets in two availability zones it supports and prov knows only "
                f"{', '.join(vpc_zones)} in {plan.region}"
            )
        vpc_zones = (*vpc_zones, extra)
    weight_bytes = doc.model.weight_bytes
    if weight_bytes is None:
        weight_bytes = doc.model.params_total * 2  # bf16: the safe upper bound for loading
    weights, bucket, prefix = _weights_path(doc, options)
    if options.fill_weights and weights != "s3":
        raise UsageError("--fill-weights fills the --weights s3 bucket; it needs --weights s3")
    budget, prewarm, tts_s = probe_budget(doc, plan, weights, alt.node.vcpus if alt.node else None)
    return DeploySpec(
        name=name,
        namespace=options.namespace,
        target=target,
        plan=plan,
        model_id=doc.model.id,
        weight_bytes=weight_bytes,
        image=image,
        public=options.public,
        drain_seconds=options.drain_seconds,
        node=alt.node,
        instance_types=instance_types,
        zones=alt.zones,
        vpc_zones=vpc_zones,
        gpu_resource=GPU_RESOURCE.get(vendor, "nvidia.com/gpu"),
        weights=weights,
        weights_bucket=bucket,
        weights_prefix=prefix,
        startup_budget_seconds=budget,
        prewarm_on_rebalance=prewarm and plan.market == "spot",
        time_to_serve_seconds=tts_s,
        fill_weights=options.fill_weights,
    )


def _weights_path(doc: PlanDocument, options: DeployOptions) -> tuple[str, str | None, str]:
    """(path, bucket, prefix) the deploy renders: --weights, else the plan's; UsageError when
    the path cannot be rendered, naming the fix."""
    path = (options.weights or doc.request.weights).strip().lower()
    if path not in DEPLOY_WEIGHTS:
        raise UsageError(
            f"--weights {path}: prov deploy renders {' or '.join(DEPLOY_WEIGHTS)} (pvc is "
            "modelled by quote only); pass --weights s3 --weights-bucket s3://BUCKET or "
            "--weights hub"
        )
    given = (options.weights_bucket or "").strip()
    if path == "hub":
        if given:
            raise UsageError("--weights-bucket applies to --weights s3 only")
        return path, None, ""
    if not given:
        raise UsageError(
            "the plan loads weights from s3 (quote's default): pass --weights-bucket "
            "s3://BUCKET[/PREFIX] (an in-region bucket holding the checkpoint), or --weights hub "
            "to download from the Hugging Face Hub"
        )
    if not given.startswith("s3://"):
        raise UsageError(f"--weights-bucket {given!r}: write it as s3://BUCKET[/PREFIX]")
    bucket, _, prefix = given[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise UsageError(
            f"--weights-bucket {given!r}: {bucket!r} is not an S3 bucket name (3-63 of a-z, "
            "0-9, '.', '-')"
        )
    prefix = prefix.strip("/") or doc.model.id  # default: the checkpoint under its model id
    return path, bucket, prefix


def probe_budget(
    doc: PlanDocument, plan: Plan, path: str, vcpus: float | None
) -> tuple[int, bool, int]:
    """(startup probe budget, prewarm on rebalance, time to serve s) on ``path``, all from
    provisioner/core/time_to_serve.py: the budget is the plan's own ``time_to_serve`` when the quote
    modelled this path, else the same function's for it; prewarm is ``needs_prewarm(time to serve,
    spot notice)``, the daemon's rule too (it gets the time to serve: --time-to-serve)."""
    from provisioner.core.time_to_serve import (
        Replica,
        needs_prewarm,
        spot_notice_s,
        time_to_serve,
    )

    m = doc.model
    weight_bytes = m.weight_bytes if m.weight_bytes is not None else m.params_total * 2
    replica = Replica(
        cloud=plan.cloud,
        instance_type=plan.instance_type,
        gpus_per_node=plan.gpus_per_node,
        vcpus=vcpus if vcpus is not None else 0.0,  # unknown: the Hub path's slower share
        nodes=max(1, min(plan.nodes, plan.pp)),  # PP nodes split the weights (weight_split)
        weight_bytes=weight_bytes,
        moe=m.params_active < m.params_total,
    )
    tts = time_to_serve(replica, path)  # type: ignore[arg-type]
    carried = plan.time_to_serve
    budget, total = tts.startup_probe_budget_s, tts.total_s
    if carried is not None and carried.weights == path:
        budget, total = carried.startup_probe_budget_s, carried.total_s
    return budget, needs_prewarm(total, spot_notice_s(plan.cloud)), round(total)


def plan_config(doc: PlanDocument, rank: int) -> str:
    """The plan document reduced to the chosen plan, as JSON for the stack config.

    The rejected shapes and the other plans are dropped (a quote can list thousands); what is
    kept still validates as a PlanDocument.
    """
    plan = select_plan(doc, rank)
    data = doc.model_dump(mode="json")
    data["plans"] = [plan.model_dump(mode="json")]
    data["rejected"] = []
    return json.dumps(data, separators=(",", ":"))
