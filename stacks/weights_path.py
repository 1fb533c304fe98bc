"""Where a deployment's vLLM reads the weights from, and what keeps a new node fast (issue 16).

The user's flags (``--weights s3|hub|pvc``, ``--weights-bucket``, ``--weights-pvc``,
``--weights-storage-class``, ``--prepull``, ``--compile-cache``) checked together into one
``WeightsChoice``; ``probe_budget`` runs provisioner/core/time_to_serve.py on exactly that
choice. Pure: no Pulumi, no Kubernetes client, no I/O (stacks/spec.py builds on it).

* **s3**: a bucket in the plan's region, given (``--weights-bucket``) or, on aws-eks, created by
  the stack (stacks/weights_bucket.py) under a name derived from the account, region and stack
  (``created_bucket_name``) so that a redeploy finds the same one.
* **pvc**: a ReadWriteMany claim, given (``--weights-pvc NAME``) or created by prov with a
  storage class (``--weights-storage-class``); vLLM reads the checkpoint from its mount.
* **hub**: the Hugging Face Hub into the node's cache.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

from provisioner.contract.document import Plan, PlanDocument
from provisioner.errors import UsageError

#: Weight paths the deploy renders (provisioner/core/time_to_serve.py models the same three).
DEPLOY_WEIGHTS = ("s3", "hub", "pvc")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3 bucket naming rules
#: Kubernetes object names (DNS-1123 subdomain: claims, storage classes)
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class WeightsChoice:
    path: str  # s3 | hub | pvc
    bucket: str | None = None  # s3: the bucket; None while the stack has yet to name it
    prefix: str = ""  # s3: the checkpoint's key prefix (no slashes at the ends)
    bucket_created: bool = False  # s3 on aws-eks without --weights-bucket: the stack makes it
    keep_bucket: bool = True  # a created bucket outlives `prov destroy` (retain)
    claim: str | None = None  # pvc: the claim's name (given, or the one prov creates)
    storage_class: str | None = None  # pvc: create the claim with this class
    pvc_gb_per_s: float | None = None  # pvc: the volume's read rate per node, when known
    prepull: bool = False  # the pre-pull DaemonSet (stacks/prepull.py)
    compile_cache: bool = False  # vLLM's compile cache kept off the node


def created_bucket_name(account: str, region: str, stack: str) -> str:
    """The bucket the stack creates: ``prov-<account>-<region>-<8 hex of the stack name>``.

    Bucket names are global; the account id makes it ours (the pattern of CDK's bootstrap
    bucket, ``cdk-<qualifier>-assets-<account>-<region>``), the stack hash keeps two stacks
    apart, and the same stack always lands on the same name: a redeploy, even after
    ``prov destroy`` retained the bucket, finds its weights there. At most 49 characters.
    """
    digest = hashlib.sha256(stack.encode()).hexdigest()[:8]
    return f"prov-{account}-{region}-{digest}"


def claim_size_gib(weight_bytes: float) -> int:
    """A created claim's request: the checkpoint + 10% + 20 GiB for the compile cache and the
    download's bookkeeping (RWX classes such as EFS ignore it, block-backed ones need it)."""
    return math.ceil(1.1 * weight_bytes / 2**30) + 20


def _bucket(given: str, model_id: str) -> tuple[str, str]:
    if not given.startswith("s3://"):
        raise UsageError(f"--weights-bucket {given!r}: write it as s3://BUCKET[/PREFIX]")
    bucket, _, prefix = given[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise UsageError(
            f"--weights-bucket {given!r}: {bucket!r} is not an S3 bucket name (3-63 of a-z, "
            "0-9, '.', '-')"
        )
    return bucket, prefix.strip("/") or model_id  # default: the checkpoint under its model id


def choose_weights(
    doc: PlanDocument,
    target: str,
    *,
    weights: str | None = None,
    bucket: str | None = None,
    keep_bucket: bool | None = None,
    claim: str | None = None,
    storage_class: str | None = None,
    pvc_gb_per_s: float | None = None,
    prepull: bool | None = None,
    compile_cache: bool | None = None,
    amd: bool = False,
) -> WeightsChoice:
    """Check the weight flags together (UsageError naming the fix) and decide the path."""
    path = (weights or doc.request.weights).strip().lower()
    if path not in DEPLOY_WEIGHTS:
        raise UsageError(f"--weights {path}: allowed: {', '.join(DEPLOY_WEIGHTS)}")
    given = (bucket or "").strip()
    if given and path != "s3":
        raise UsageError("--weights-bucket applies to --weights s3 only")
    if (claim or storage_class or pvc_gb_per_s is not None) and path != "pvc":
        raise UsageError(
            "--weights-pvc, --weights-storage-class and --weights-pvc-gbps apply to "
            "--weights pvc only"
        )
    fast = path != "hub"  # the profiles time_to_serve models: s3 and pvc pre-pull and cache
    if compile_cache and not fast:
        raise UsageError(
            "--compile-cache keeps vLLM's cache where every node reads it: the bucket "
            "(--weights s3) or the claim (--weights pvc); --weights hub has neither"
        )
    if prepull and amd:
        raise UsageError("--prepull selects NVIDIA GPU nodes; AMD pools are not pre-pulled yet")
    pulled = (fast and not amd) if prepull is None else prepull
    cached = fast if compile_cache is None else compile_cache
    created = path == "s3" and not given and target == "aws-eks"
    if keep_bucket is not None and not created:
        raise UsageError(
            "--keep-weights-bucket/--delete-weights-bucket apply to the bucket the aws-eks "
            "stack creates (--weights s3 without --weights-bucket)"
        )
    if path == "hub":
        return WeightsChoice("hub", prepull=pulled, compile_cache=cached)
    if path == "s3":
        if given:
            name, prefix = _bucket(given, doc.model.id)
            return WeightsChoice("s3", name, prefix, prepull=pulled, compile_cache=cached)
        if not created:
            raise UsageError(
                "the plan loads weights from s3 (quote's default): pass --weights-bucket "
                "s3://BUCKET[/PREFIX] (an in-region bucket holding the checkpoint; --target "
                "aws-eks creates one), or --weights hub to download from the Hugging Face Hub"
            )
        keep = True if keep_bucket is None else keep_bucket
        return WeightsChoice(
            "s3", None, doc.model.id, True, keep, prepull=pulled, compile_cache=cached
        )
    if (claim is None) == (storage_class is None):
        raise UsageError(
            "--weights pvc needs exactly one of --weights-pvc NAME (an existing ReadWriteMany "
            "claim) and --weights-storage-class CLASS (prov creates the claim)"
        )
    for flag, value in (("--weights-pvc", claim), ("--weights-storage-class", storage_class)):
        if value is not None and not _K8S_NAME.match(value):
            raise UsageError(f"{flag} {value!r} is not a Kubernetes object name")
    if pvc_gb_per_s is not None and not 0 < pvc_gb_per_s <= 1000:
        raise UsageError(f"--weights-pvc-gbps {pvc_gb_per_s:g}: must be > 0 (GB/s per node)")
    return WeightsChoice(
        "pvc",
        claim=claim,
        storage_class=storage_class,
        pvc_gb_per_s=pvc_gb_per_s,
        prepull=pulled,
        compile_cache=cached,
    )


def probe_budget(
    doc: PlanDocument, plan: Plan, choice: WeightsChoice, vcpus: float | None
) -> tuple[int, bool, int]:
    """(startup probe budget, prewarm on rebalance, time to serve s) for ``choice``, all from
    provisioner/core/time_to_serve.py: the plan's own ``time_to_serve`` when the quote modelled
    exactly this (its path's profile), else the same function run on the deploy's choice;
    prewarm is ``needs_prewarm(time to serve, spot notice)``, the daemon's rule too (it gets the
    time to serve: --time-to-serve)."""
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
    tts = time_to_serve(
        replica,
        choice.path,  # type: ignore[arg-type]
        prepulled=choice.prepull,
        compile_cache=choice.compile_cache,
        pvc_gb_per_s=choice.pvc_gb_per_s,
    )
    fast = choice.path != "hub"
    # the quote modelled the path's profile: pre-pull and cache on s3/pvc, neither on hub, and
    # the table's pvc rate
    profile = choice.prepull == fast and choice.compile_cache == fast
    profile = profile and choice.pvc_gb_per_s is None
    carried = plan.time_to_serve
    budget, total = tts.startup_probe_budget_s, tts.total_s
    if carried is not None and carried.weights == choice.path and profile:
        budget, total = carried.startup_probe_budget_s, carried.total_s
    return budget, needs_prewarm(total, spot_notice_s(plan.cloud)), round(total)
