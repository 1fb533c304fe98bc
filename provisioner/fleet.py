"""The names and permissions `prov deploy` and `prov daemon` share: the one place to change them.

The deploy stack (stacks/) writes these tags, labels and taints on what it creates; the daemon
(provisioner/daemon/) reads them to find the instances, nodes and pods it manages. The daemon's
AWS actions and Kubernetes verbs are declared here, next to the names, and the stack's IAM
policy and RBAC are *generated* from those declarations (``iam_policy``, ``rbac_rules``), so a
new call in the daemon without its permission fails the end-to-end test (tests/e2e/) that runs
the daemon with exactly the generated policy under moto's IAM enforcement.

Who replaces a reclaimed node (docs/daemon.md): the daemon, and only the daemon. The stack
launches each replica group once, through an Auto Scaling group of fixed size with Capacity
Rebalancing off; on a notice the daemon detaches the group's instances from it (the ASG then
launches nothing) and launches the replacement group itself from the pool's launch template.

Pure: no SDK, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREFIX = "prov.dev/"

# -- EC2 tags (on instances, volumes, subnets; the stack sets them, the daemon copies them) ----
MANAGED = PREFIX + "managed"  # "true" on every instance, subnet and node prov manages
MANAGED_VALUE = "true"
STACK = PREFIX + "stack"  # the Pulumi stack that owns the pool
POOL = PREFIX + "pool"  # the serving pool (one plan, one model); a node label too
REPLICA = PREFIX + "replica"  # replica id shared by all nodes of one replica group
REPLICA_SIZE = PREFIX + "replica-size"  # nodes per replica group (one LWS group)
REPLACES = PREFIX + "replaces"  # on a replacement: the replica id it replaces
MARKET = PREFIX + "market"  # "spot" or "on-demand", informational
# The pool's choices, each a space-separated list (``tag_list``/``split_tag_list``), in the
# order the plan's prices say: the plan's own first, then the cheaper before the dearer. The
# daemon falls back across them in that order (types: unless --alternative is given).
INSTANCE_TYPES = PREFIX + "instance-types"  # the pool's types, the plan's first
ZONES = PREFIX + "zones"  # the pool's availability-zone ids (e.g. use2-az1), the plan's first
# On a warm spare replica group (--spare-replicas): "true" while it waits out of traffic,
# "promoted" once the daemon made it the replacement of an interrupted replica.
SPARE = PREFIX + "spare"
SPARE_VALUE = "true"
SPARE_PROMOTED = "promoted"


def tag_list(values: list[str] | tuple[str, ...]) -> str:
    """The value of a list tag (INSTANCE_TYPES, ZONES)."""
    return " ".join(values)


def split_tag_list(value: str | None) -> tuple[str, ...]:
    """A list tag's values in order, without blanks or repeats."""
    return tuple(dict.fromkeys((value or "").split()))


# EC2 tags AWS sets itself (read only).
AWS_ASG_NAME = "aws:autoscaling:groupName"
AWS_LAUNCH_TEMPLATE_ID = "aws:ec2launchtemplate:id"
AWS_LAUNCH_TEMPLATE_VERSION = "aws:ec2launchtemplate:version"

# -- Kubernetes labels ------------------------------------------------------------------------
GPU = PREFIX + "gpu"  # node and pod: canonical GPU name, e.g. H200-SXM
ROLE = PREFIX + "role"  # pod: server (one node), leader or worker (LeaderWorkerSet)
SHAPE = PREFIX + "shape"  # pod: the layout as a label value, e.g. tp8xpp2, dp8-ep8
#: On every vLLM pod: the daemon waits for these pods to be Ready on a replacement's nodes.
WORKLOAD_LABEL = PREFIX + "workload"
WORKLOAD_VALUE = "vllm"
NVIDIA_GPU_PRESENT = "nvidia.com/gpu.present"  # the NVIDIA device plugin chart's node affinity
#: Set by the daemon when a node's drain starts: the AWS load balancer controller and the cloud
#: provider take such nodes out of external load balancers (a well-known Kubernetes label).
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SPARE_LABEL = SPARE  # node label "true" on a spare's nodes (with EXCLUDE_LB_LABEL)

# -- taints and annotations -------------------------------------------------------------------
GPU_TAINT_KEY = "nvidia.com/gpu"  # every GPU node carries it, every vLLM pod tolerates it
GPU_TAINT_VALUE = "present"
GPU_TAINT_EFFECT = "NoSchedule"
TAINT_KEY = PREFIX + "interruption"  # NoSchedule taint the daemon sets; value = the event kind
STATE_ANNOTATION = PREFIX + "interruption-state"  # node: JSON progress record of a flow
PLAN_ANNOTATION = PREFIX + "plan"  # pod: the plan behind the workload (JSON)

# -- the daemon's identity --------------------------------------------------------------------
DAEMON_NAME = "prov-daemon"
DAEMON_NAMESPACE = "prov-system"
DAEMON_SERVICE_ACCOUNT = "prov-daemon"


# -- what the daemon calls, and so what it may do ---------------------------------------------


@dataclass(frozen=True)
class AwsCall:
    """One IAM action the daemon uses. ``on`` is the resource the policy grants it on:
    "queue" (the stack's SQS queue ARN), "node-role" (the GPU nodes' IAM role, for PassRole)
    or "*" (actions without resource-level permissions, or on instances launched at run time).
    ``features`` says which daemon features call it ("spot": the spot-interruption chain the
    end-to-end test runs; others: rebalance, spares, asg-lifecycle)."""

    action: str
    on: str
    why: str
    features: tuple[str, ...] = ("spot",)
    implied: bool = False  # AWS checks it inside another call (moto does not: not provable)


AWS_CALLS: tuple[AwsCall, ...] = (
    AwsCall("sqs:ReceiveMessage", "queue", "long-poll EventBridge notices"),
    AwsCall("sqs:DeleteMessage", "queue", "acknowledge a notice once its replacement is Ready"),
    AwsCall("sqs:ChangeMessageVisibility", "queue", "keep a message hidden while its flow runs"),
    AwsCall(
        "sqs:GetQueueAttributes", "queue", "--dry-run --once: can the queue be read", ("check",)
    ),
    AwsCall("ec2:DescribeInstances", "*", "the notice's instance, its group, replacements"),
    AwsCall("ec2:DescribeSubnets", "*", "the pool's subnets in other zones for fallbacks"),
    AwsCall("ec2:RunInstances", "*", "launch the replacement group from the launch template"),
    AwsCall(
        "ec2:CreateTags", "*", "tags on RunInstances; promoting a warm spare", ("spares",), True
    ),
    AwsCall(
        "ec2:TerminateInstances",
        "*",
        "retire the survivors of a multi-node group; retire spares",
        ("multi-node", "spares"),
    ),
    AwsCall(
        "iam:PassRole", "node-role", "RunInstances with the node instance profile", implied=True
    ),
    AwsCall(
        "autoscaling:DetachInstances", "*", "take the reclaimed group out of its ASG (no refill)"
    ),
    AwsCall(
        "autoscaling:CompleteLifecycleAction",
        "*",
        "let an ASG's own termination continue after the drain",
        ("asg-lifecycle",),
    ),
)


#: What the vLLM pods call with ``--weights s3``: the Run:ai streamer (vLLM
#: ``--load-format runai_streamer``) lists the checkpoint's files, then reads them in ranged
#: GETs; vLLM fetches config and tokenizer files the same way. The GPU nodes' role gets exactly
#: this on the one bucket and prefix (``weights_read_policy``). ``on``: "bucket" or "objects".
WEIGHTS_READ_CALLS: tuple[AwsCall, ...] = (
    AwsCall("s3:ListBucket", "bucket", "list the checkpoint's files (ListObjectsV2)", ("weights",)),
    AwsCall("s3:GetObject", "objects", "ranged reads of the files, HeadObject", ("weights",)),
)


#: What the one-shot fill Job (``--fill-weights``) calls: ``aws s3 sync`` lists what the prefix
#: holds, then uploads (multipart for large files: Create/UploadPart/Complete are s3:PutObject).
WEIGHTS_FILL_CALLS: tuple[AwsCall, ...] = (
    AwsCall("s3:ListBucket", "bucket", "what the prefix already holds (resume)", ("fill",)),
    AwsCall("s3:PutObject", "objects", "upload the checkpoint's files", ("fill",)),
    AwsCall("s3:AbortMultipartUpload", "objects", "drop an interrupted upload", ("fill",)),
)
#: The fill Job's ServiceAccount (EKS Pod Identity gives it the fill role; the vLLM pods keep
#: the read-only node role).
WEIGHTS_FILL_SERVICE_ACCOUNT = "prov-weights-fill"


#: What the vLLM pods' compile-cache steps call (``--compile-cache`` with ``--weights s3``): an
#: init container restores vLLM's cache from ``cache/PREFIX`` (``aws s3 sync`` down: list, get)
#: and a sidecar saves new entries back (list, put). Granted on that prefix only, next to the
#: read-only weights (``compile_cache_policy``).
COMPILE_CACHE_CALLS: tuple[AwsCall, ...] = (
    AwsCall("s3:ListBucket", "bucket", "what the cache prefix holds (sync)", ("compile-cache",)),
    AwsCall("s3:GetObject", "objects", "restore the cache on a new node", ("compile-cache",)),
    AwsCall("s3:PutObject", "objects", "save entries compiled here", ("compile-cache",)),
)
#: The key prefix of the compile cache in the weights bucket: ``cache/<weights prefix>``.
COMPILE_CACHE_PREFIX = "cache"


def weights_read_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """Read-only access to ``s3://bucket/prefix/`` and nothing else, from WEIGHTS_READ_CALLS."""
    return _bucket_policy(bucket, prefix, WEIGHTS_READ_CALLS, "Read")


def weights_fill_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """Write access to ``s3://bucket/prefix/`` for the fill Job, from WEIGHTS_FILL_CALLS."""
    return _bucket_policy(bucket, prefix, WEIGHTS_FILL_CALLS, "Fill")


def compile_cache_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """Read and write access to ``s3://bucket/prefix/`` (the compile cache), from
    COMPILE_CACHE_CALLS."""
    return _bucket_policy(bucket, prefix, COMPILE_CACHE_CALLS, "Cache")


def _bucket_policy(
    bucket: str, prefix: str, calls: tuple[AwsCall, ...], verb: str
) -> dict[str, Any]:
    prefix = prefix.strip("/")
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{bucket}/*"
    listing = [c.action for c in calls if c.on == "bucket"]
    on_objects = sorted(c.action for c in calls if c.on == "objects")
    statements: list[dict[str, Any]] = []
    if listing:
        st: dict[str, Any] = {
            "Sid": "ListWeights",
            "Effect": "Allow",
            "Action": listing,
            "Resource": f"arn:aws:s3:::{bucket}",
        }
        if prefix:
            st["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
        statements.append(st)
    if on_objects:
        statements.append(
            {"Sid": f"{verb}Weights", "Effect": "Allow", "Action": on_objects, "Resource": objects}
        )
    return {"Version": "2012-10-17", "Statement": statements}


@dataclass(frozen=True)
class KubeCall:
    """Verbs the daemon uses on one Kubernetes resource; ``namespaced``: only in its own
    namespace (a Role), else cluster-wide (a ClusterRole)."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    namespaced: bool = False


KUBE_CALLS: tuple[KubeCall, ...] = (
    KubeCall("", "nodes", ("get", "list", "patch", "delete"), "find, taint, cordon, annotate"),
    KubeCall("", "pods", ("list",), "the pods on a node; readiness of a replacement"),
    KubeCall("", "pods/eviction", ("create",), "drain through the Eviction API (PDBs hold)"),
    KubeCall("", "events", ("create",), "Kubernetes Events about what it did to a node"),
    KubeCall("coordination.k8s.io", "leases", ("get", "create", "patch"), "leader election", True),
)


def iam_policy(
    queue_arn: str, node_role_arn: str, leave_out: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The daemon's IAM policy document, generated from AWS_CALLS. ``leave_out``: actions to
    drop (the least-privilege test proves each one is needed)."""
    by_resource: dict[str, list[str]] = {}
    arns = {"queue": queue_arn, "node-role": node_role_arn, "*": "*"}
    for c in AWS_CALLS:
        if c.action not in leave_out:
            by_resource.setdefault(c.on, []).append(c.action)
    sids = {"queue": "ConsumeNotices", "node-role": "PassNodeRole", "*": "ReplaceCapacity"}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": sids[on],
                "Effect": "Allow",
                "Action": sorted(actions),
                "Resource": arns[on],
            }
            for on, actions in by_resource.items()
        ],
    }


def rbac_rules(namespaced: bool) -> list[dict[str, Any]]:
    """RBAC rules generated from KUBE_CALLS: the ClusterRole's (False) or the Role's (True)."""
    rules: dict[str, dict[str, Any]] = {}
    for c in KUBE_CALLS:
        if c.namespaced != namespaced:
            continue
        rule = rules.setdefault(
            f"{c.group}|{','.join(c.verbs)}",
            {"apiGroups": [c.group], "resources": [], "verbs": list(c.verbs)},
        )
        rule["resources"].append(c.resource)
    return list(rules.values())


def allowed(verb: str, group: str, resource: str) -> bool:
    """Does the generated RBAC grant ``verb`` on ``group/resource``?"""
    return any(c.group == group and c.resource == resource and verb in c.verbs for c in KUBE_CALLS)
