"""The `vllm serve` command of a pod for DP / EP plans (provisioner/core/layouts.py). Pure.

One node: the plan's own flags (--data-parallel-size N --enable-expert-parallel) are all
vLLM needs. Across nodes vLLM v0.18.0 runs data parallelism without Ray when every node starts
its own DP ranks (docs/serving/data_parallel_deployment.md, the Kimi-K2 recipe):

  node 0   vllm serve ... --data-parallel-size N --data-parallel-size-local L
           --data-parallel-address <node 0> --data-parallel-rpc-port P
  node i   the same + --data-parallel-start-rank i x L --headless (no API server)

instead of --nnodes/--node-rank/--master-addr, which are for TP/PP across nodes. A
LeaderWorkerSet gives each worker LWS_WORKER_INDEX (1..nodes-1) and the leader's address;
Kubernetes cannot multiply in $(VAR) expansion, so workers start through /bin/sh for i x L.
tests/stacks/test_vllm_argv.py checks every rendered flag against vLLM v0.18.0's parser.
"""

from __future__ import annotations

from provisioner.contract.document import Plan

#: vLLM's default --data-parallel-rpc-port (config/parallel.py: data_parallel_rpc_port 29550),
#: rendered explicitly so every node agrees
DP_RPC_PORT = 29550
LEADER_ADDRESS = "$(LWS_LEADER_ADDRESS)"  # injected by LeaderWorkerSet, expanded by Kubernetes


def dp_across_nodes(plan: Plan) -> bool:
    return plan.dp > 1 and plan.nodes > 1


def local_ranks(plan: Plan) -> int:
    """DP ranks per node (the planner's DP layouts put whole TP groups on each node)."""
    return plan.dp // plan.nodes


def dp_node_args(plan: Plan, role: str) -> list[str]:
    """Flags a leader or worker pod adds to the plan's for DP across nodes."""
    args = [
        "--data-parallel-size-local",
        str(local_ranks(plan)),
        "--data-parallel-address",
        LEADER_ADDRESS,
        "--data-parallel-rpc-port",
        str(DP_RPC_PORT),
    ]
    return [*args, "--headless"] if role == "worker" else args


def serve_command(plan: Plan, role: str) -> list[str]:
    """The container command; its args are the flags. Workers of DP across nodes compute their
    first DP rank in the shell ($$ is Kubernetes' escape for a literal $)."""
    if dp_across_nodes(plan) and role == "worker":
        start = f"$$((LWS_WORKER_INDEX * {local_ranks(plan)}))"
        script = f'exec vllm serve "$@" --data-parallel-start-rank {start}'
        return ["/bin/sh", "-c", script, "vllm"]
    return ["vllm", "serve"]
