"""Names prov writes on EC2 instances and Kubernetes nodes: the one place to change them.

The deploy stack tags every instance it launches with MANAGED, POOL, REPLICA and REPLICA_SIZE;
the daemon ignores instances without ``MANAGED=true``. A replica is the set of instances that
share a REPLICA value (one node, or a TP x PP LeaderWorkerSet group of several nodes); a pool
is the set of replicas that serve one plan. This module imports nothing on purpose.
"""

from __future__ import annotations

PREFIX = "prov.dev/"

# EC2 instance tags (set by `prov deploy` and copied onto replacements by the daemon).
MANAGED = PREFIX + "managed"  # "true" on every instance prov manages
POOL = PREFIX + "pool"  # the serving pool (one plan, one model) the replica belongs to
REPLICA = PREFIX + "replica"  # replica id shared by all nodes of one replica group
REPLICA_SIZE = PREFIX + "replica-size"  # number of nodes in the replica group
REPLACES = PREFIX + "replaces"  # on a replacement: the replica id it replaces
MARKET = PREFIX + "market"  # "spot" or "on-demand", informational
# On a warm spare replica group (--spare-replicas): "true" while it waits out of traffic,
# "promoted" once the daemon made it the replacement of an interrupted replica.
SPARE = PREFIX + "spare"
SPARE_VALUE = "true"
SPARE_PROMOTED = "promoted"

MANAGED_VALUE = "true"

# Kubernetes node taint, annotations and labels written by the daemon.
TAINT_KEY = PREFIX + "interruption"  # NoSchedule taint; value = the event kind
STATE_ANNOTATION = PREFIX + "interruption-state"  # JSON progress record, for resume after restart
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SPARE_LABEL = SPARE  # node label "true" on a spare's nodes (with EXCLUDE_LB_LABEL): no traffic

# Default label selecting the vLLM pods whose readiness makes a replica Ready.
WORKLOAD_LABEL = PREFIX + "workload"
WORKLOAD_VALUE = "vllm"

# EC2 tags AWS sets itself (read only).
AWS_ASG_NAME = "aws:autoscaling:groupName"
AWS_LAUNCH_TEMPLATE_ID = "aws:ec2launchtemplate:id"
AWS_LAUNCH_TEMPLATE_VERSION = "aws:ec2launchtemplate:version"
