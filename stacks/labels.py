"""Names that other parts of prov rely on: node labels, taints, tags and the daemon's identity.

The interruption daemon (prov daemon) finds the nodes and workloads it manages through these,
so they are constants here rather than strings scattered through the stacks.
"""

from __future__ import annotations

#: Kubernetes label prefix and AWS tag prefix of everything prov creates.
PREFIX = "prov"

# Labels on GPU nodes (set by GpuNodePool) and on the pods (set by the manifests).
MANAGED = f"{PREFIX}/managed"  # "true" on every node and pod prov manages
POOL = f"{PREFIX}/pool"  # node pool name; the pods' nodeSelector on aws-eks
GPU = f"{PREFIX}/gpu"  # canonical GPU name, e.g. H200-SXM
ROLE = f"{PREFIX}/role"  # pod role: server (one node), leader or worker (LeaderWorkerSet)
SHAPE = f"{PREFIX}/shape"  # e.g. tp8-pp2

# Tags on the EC2 instances, volumes and node group (AWS target).
STACK = f"{PREFIX}/stack"
NODES_PER_REPLICA = f"{PREFIX}/nodes-per-replica"  # a replica is this many nodes (one LWS group)
MARKET = f"{PREFIX}/market"  # spot | on-demand
INSTANCE_TYPES = f"{PREFIX}/instance-types"  # the pool's types, the plan's first, space-separated
ZONES = f"{PREFIX}/zones"  # the pool's availability-zone ids, space-separated

# The taint every GPU node carries and every vLLM pod tolerates.
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"
GPU_TAINT_EFFECT = "NoSchedule"

#: Label the NVIDIA device plugin chart's default node affinity looks for.
NVIDIA_GPU_PRESENT = "nvidia.com/gpu.present"

# The daemon's Kubernetes identity (EKS Pod Identity binds its IAM role to it).
DAEMON_NAMESPACE = "prov-system"
DAEMON_SERVICE_ACCOUNT = "prov-daemon"
