"""What to deploy: one plan of a `prov quote --json` document plus the deploy options.

`prov deploy --render` and the Pulumi program (stacks/program.py) both build a DeploySpec with
`build_spec`, and both hand it to stacks/manifests.py: that is why the rendered YAML and the
Pulumi resources cannot drift apart. Pure: no Pulumi and no Kubernetes client here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from provisioner.contract.document import Plan, PlanDocument
from provisioner.core.offer import Offer
from provisioner.core.vllm_rules import VLLM_VERSION
from provisioner.errors import UsageError
from stacks.instances import (
    NodeShape,
    alternatives,
    efa_capable,
    offer_contradiction,
    other_zone,
)
from stacks.options import DAEMON_IMAGE as DAEMON_IMAGE
from stacks.options import DEFAULT_DRAIN_SECONDS as DEFAULT_DRAIN_SECONDS
from stacks.options import VLLM_IMAGE, DeployOptions
from stacks.weights_path import WeightsChoice, choose_weights, probe_budget

#: The same release of vLLM's ROCm image, for AMD GPUs (vllm-project publishes
#: vllm/vllm-openai-rocm:vX.Y.Z per release; see vllm-project/recipes, e.g. GLM/GLM.md).
VLLM_ROCM_IMAGE = f"vllm/vllm-openai-rocm:v{VLLM_VERSION}"

TARGETS = ("aws-eks", "kubeconfig")
DAEMON_MODES = ("queue", "imds", "none")
PORT = 8000
MASTER_PORT = 29500  # torch.distributed rendezvous on the leader (multi-node)

# Shutdown: preStop sleep, then SIGTERM, then vLLM drains for --shutdown-timeout seconds.
PRE_STOP_SECONDS = 15  # Service endpoints and load balancers stop sending before SIGTERM
EXIT_MARGIN_SECONDS = 15  # engine and worker teardown after the drain
MAX_DRAIN_SECONDS = 3600

# Startup: the probe budget is the plan's time to serve (provisioner/core/time_to_serve.py), the
# same number the quote prices; see docs/recovery.md.
PROBE_PERIOD_SECONDS = 10
#: vLLM's loader for s3:// model paths and local directories (Run:ai Model Streamer; vLLM
#: v0.18.0 config/load.py; docs/models/extensions/runai_model_streamer.md: both path kinds).
S3_LOAD_FORMAT = "runai_streamer"
#: Where a --weights pvc claim is mounted in the vLLM pods; the checkpoint is MODELS_MOUNT/<id>.
MODELS_MOUNT = "/models"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 40  # LeaderWorkerSet pod names append -<group>-<worker>; stay well under 63

#: Availability zones where EKS refuses control-plane subnets (UnsupportedAvailabilityZone-
#: Exception; EKS user guide, "Create an Amazon EKS cluster": use1-az3, usw1-az2, cac1-az3).
#: GPU nodes may still run there; only the cluster's own subnets avoid them.
EKS_UNSUPPORTED_ZONES = frozenset({"use1-az3", "usw1-az2", "cac1-az3"})


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
    weights: str = "hub"  # the weight path rendered: s3, hub or pvc
    weights_bucket: str | None = None  # s3: the bucket name (None: the stack has yet to name it)
    weights_prefix: str = ""  # s3: the key prefix of the checkpoint (no slashes at the ends)
    #: s3 / pvc details, pre-pull and compile cache (stacks/weights_path.py)
    storage: WeightsChoice = field(default_factory=lambda: WeightsChoice("hub"))
    #: time_to_serve(...).startup_probe_budget_s of the plan on this weight path
    startup_budget_seconds: int = 600
    #: time_to_serve(...).prewarm(spot notice): a replacement cannot be ready within the
    #: notice, so the daemon starts it on the rebalance recommendation (docs/recovery.md)
    prewarm_on_rebalance: bool = False
    #: the same time_to_serve(...).total_s, passed to the daemon (--time-to-serve): its own
    #: prewarm, spare and early-shedding decisions follow from it (docs/recovery.md)
    time_to_serve_seconds: int | None = None
    fill_weights: bool = False  # render/apply the fill Job (stacks/weights_fill.py)
    warnings: tuple[str, ...] = ()  # for the CLI to print: what the render could not know

    @property
    def layout(self) -> str:
        """The plan's layout as quote's table, fit and deploy's summary name it (TP8, TP8xPP2,
        DP8+EP8: provisioner/core/layouts.layout_label, the one vocabulary)."""
        from provisioner.core.layouts import Layout, layout_label

        p = self.plan
        return layout_label(Layout(p.tp, p.dp, p.pp, p.ep), p.dcp)

    @property
    def weights_uri(self) -> str | None:
        """The s3:// model path vLLM streams from, or None (hub, pvc)."""
        if self.weights != "s3" or self.weights_bucket is None:
            return None
        return f"s3://{self.weights_bucket}/{self.weights_prefix}".rstrip("/")

    @property
    def model_path(self) -> str | None:
        """Where vLLM reads the checkpoint when it is not the Hub: s3:// or the claim's mount."""
        if self.weights == "pvc":
            return f"{MODELS_MOUNT}/{self.model_id}"
        return self.weights_uri

    @property
    def claim_name(self) -> str | None:
        """--weights pvc: the claim mounted (given, or ``<name>-weights`` that prov creates)."""
        if self.weights != "pvc":
            return None
        return self.storage.claim or f"{self.name}-weights"

    @property
    def cache_prefix(self) -> str | None:
        """--weights s3 with the compile cache: its key prefix in the weights bucket."""
        from provisioner.fleet import COMPILE_CACHE_PREFIX

        if self.weights_uri is None or not self.storage.compile_cache:
            return None
        return f"{COMPILE_CACHE_PREFIX}/{self.weights_prefix}"

    def with_bucket(self, bucket: str) -> DeploySpec:
        """The spec once the stack has named the bucket it creates."""
        import dataclasses

        return dataclasses.replace(self, weights_bucket=bucket)

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
        uri = self.model_path
        if uri is not None:  # stream from the bucket/claim; clients still ask for the model id
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


def _check_args(plan: Plan, ctx: int) -> None:
    if not plan.vllm_args:
        raise UsageError(
            f"rank {plan.rank} has no vLLM arguments (its engine is not vLLM); prov deploy runs "
            "vLLM only: pick a vLLM plan with --rank"
        )
    shape = [("--tensor-parallel-size", plan.tp), ("--pipeline-parallel-size", plan.pp)]
    shape.append(("--max-model-len", ctx))  # the request's; the rest: contract/check.py
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
                f"rank {plan.rank}: vllm_args say {flag} {got} but the plan says {want}; "
                "the file was edited by hand: quote again"
            )


def resolve_target(target: str, plan: Plan) -> str:
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
    from provisioner.contract.check import deploy_facts
    from provisioner.core.deployable import not_deployable_reason

    reason = not_deployable_reason(deploy_facts(doc, plan), target)
    if reason is not None:
        raise UsageError(f"rank {plan.rank}: {reason}; {deployable_hint(doc, target)}")


def deployable_hint(doc: PlanDocument, target: str = "auto") -> str:
    """What gives a plan prov deploy can run: another rank of the file, or a new quote."""
    from provisioner.contract.check import deploy_facts, plan_scheme
    from provisioner.core.deployable import not_deployable_reason

    ok = [p.rank for p in doc.plans if not_deployable_reason(deploy_facts(doc, p), target) is None]
    if ok:
        return f"deployable ranks in this file: {', '.join(map(str, ok[:5]))} (--rank N)"
    r = doc.request
    gguf = r.quant.lower().startswith(("q", "iq"))  # llama.cpp plans: quote a vLLM format
    scheme = plan_scheme(doc)
    other_checkpoint = scheme is not None and scheme.checkpoint is not None
    quant = "auto" if gguf or other_checkpoint else r.quant  # auto: the published checkpoint
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
    target = resolve_target(options.target, plan)
    _check_deployable(doc, plan, target)
    _check_args(plan, doc.request.ctx)
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
    wrong = offer_contradiction(plan, offers, eks=target == "aws-eks")
    if wrong:
        raise UsageError(f"rank {plan.rank}: {wrong}; the file was edited by hand: quote again")
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
    # subnets take their CIDR from their place in vpc_zones: the plan's zone first, then by name
    # (the price order, which a price refresh can change, goes only into fleet.ZONES); a reorder
    # would move CIDRs between existing subnets and make `pulumi up` replace them
    vpc_zones = (*alt.zones[:1], *sorted(alt.zones[1:]))
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
    choice = choose_weights(
        doc,
        target,
        weights=options.weights,
        bucket=options.weights_bucket,
        keep_bucket=options.keep_weights_bucket,
        claim=options.weights_pvc,
        storage_class=options.weights_storage_class,
        pvc_gb_per_s=options.weights_pvc_gbps,
        prepull=options.prepull,
        compile_cache=options.compile_cache,
        amd=vendor == "AMD",
    )
    if options.fill_weights and choice.path == "hub":
        raise UsageError(
            "--fill-weights fills the bucket (--weights s3) or the claim (--weights pvc); "
            "--weights hub downloads at every start"
        )
    warnings: tuple[str, ...] = ()
    if alt.node is None:
        warnings = (
            f"rank {plan.rank}: prov's prices do not know {plan.cloud} {plan.instance_type} "
            "(quoted with --prices, or edited by hand?): its pods get no CPU or memory requests",
        )
    budget, prewarm, tts_s = probe_budget(doc, plan, choice, alt.node.vcpus if alt.node else None)
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
        weights=choice.path,
        weights_bucket=choice.bucket,
        weights_prefix=choice.prefix,
        storage=choice,
        startup_budget_seconds=budget,
        prewarm_on_rebalance=prewarm and plan.market == "spot",
        time_to_serve_seconds=tts_s,
        fill_weights=options.fill_weights,
        warnings=warnings,
    )


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
