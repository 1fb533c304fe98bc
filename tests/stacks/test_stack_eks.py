"""The Pulumi program, aws-eks target (Cluster + GpuNodePool + VllmService), under mocks.

Plans quoted with --cloud aws. The expected instance types and zones are read by hand off
pricing/data/offers.csv (us-east-2 rows), and each test first checks the plan is still the
one those rows describe, so a changed snapshot fails loudly rather than silently.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pulumi.runtime import rpc
from stack_harness import ACCOUNT, API_KEY, PlanFile, StackRun, run_stack, without_secrets

from stacks.options import DeployOptions

ASG = "aws:autoscaling/group:Group"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SUBNET = "aws:ec2/subnet:Subnet"
GPU_POOL = "kimi-k2-thinking"  # the release name, from moonshotai/Kimi-K2-Thinking
# pulumi_aws warns about one of its own deprecated resources when its ec2 module loads.
pytestmark = pytest.mark.filterwarnings("ignore:aws.ec2/encryptioncontrol:DeprecationWarning")


@pytest.fixture(scope="module")
def one(plans: dict[str, PlanFile]) -> StackRun:
    plan = plans["one_aws"].doc.plans[0]
    # aws_2026.csv: the cheapest rentable 8 x H200 spot node in us-east-2 is p5en.48xlarge in
    # use2-az3 ($26.2893/h; az1 26.3634, az2 26.9512); p5e is sold as capacity blocks only
    assert (plan.instance_type, plan.region, plan.zone, plan.market, plan.nodes) == (
        "p5en.48xlarge",
        "us-east-2",
        "use2-az3",
        "spot",
        1,
    )
    return run_stack(plans["one_aws"], DeployOptions())


@pytest.fixture(scope="module")
def two(plans: dict[str, PlanFile]) -> StackRun:
    plan = plans["two_aws"].doc.plans[0]
    # aws_2026.csv: 2 x p5.48xlarge spot in use2-az3 ($19.7597/h each; az1 19.8665, az2 20.205)
    assert (plan.instance_type, plan.region, plan.zone, plan.market, plan.nodes) == (
        "p5.48xlarge",
        "us-east-2",
        "use2-az3",
        "spot",
        2,
    )
    assert plan.tp * plan.pp == 16
    return run_stack(plans["two_aws"], DeployOptions())


def gpu_pool(run: StackRun) -> dict[str, Any]:
    """The one replica group's Auto Scaling group (one replica per stack)."""
    return run.one(ASG, f"{GPU_POOL}-{GPU_POOL}-r0").inputs


def pool_types(run: StackRun) -> list[str]:
    lt = gpu_pool(run)["mixedInstancesPolicy"]["launchTemplate"]
    return [o["instanceType"] for o in lt["overrides"]]


def pool_zones(run: StackRun) -> list[str]:
    zone_of = {f"{s.name}-id": s.inputs["availabilityZoneId"] for s in run.of(SUBNET)}
    return [zone_of[i] for i in gpu_pool(run)["vpcZoneIdentifiers"]]


def node_config(run: StackRun) -> dict[str, Any]:
    """The nodeadm NodeConfig inside the launch template's MIME user data."""
    text = base64.b64decode(run.one(LAUNCH_TEMPLATE).inputs["userData"]).decode()
    part = text.split("Content-Type: application/node.eks.aws\n\n", 1)[1]
    return json.loads(part.split("\n\n--", 1)[0])


def kubelet_flag(run: StackRun, flag: str) -> dict[str, str]:
    (value,) = [
        f.split("=", 1)[1]
        for f in node_config(run)["spec"]["kubelet"]["flags"]
        if f.startswith(flag + "=")
    ]
    return dict(item.split("=", 1) for item in value.split(","))


def pod_specs(run: StackRun) -> list[dict[str, Any]]:
    deployments = [r for r in run.of("kubernetes:apps/v1:Deployment") if r.name == GPU_POOL]
    if deployments:
        return [deployments[0].inputs["spec"]["template"]["spec"]]
    lws = run.one("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet").inputs["spec"]
    t = lws["leaderWorkerTemplate"]
    return [t["leaderTemplate"]["spec"], t["workerTemplate"]["spec"]]


def test_spot_pool_lists_the_alternative_types_and_zones(one: StackRun) -> None:
    pool = gpu_pool(one)
    dist = pool["mixedInstancesPolicy"]["instancesDistribution"]
    assert dist["onDemandPercentageAboveBaseCapacity"] == 0  # all spot
    # us-east-2 rents 8 x H200 as p5en.48xlarge (az1, az2, az3); p5e is capacity blocks only.
    assert pool_types(one) == ["p5en.48xlarge"]
    assert pool_zones(one) == ["use2-az3", "use2-az1", "use2-az2"]
    assert one.one(LAUNCH_TEMPLATE).inputs["imageId"] == (
        "resolve:ssm:/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/x86_64/nvidia/"
        "recommended/image_id"
    )


def test_one_replacement_actor_the_asg_never_replaces(one: StackRun) -> None:
    """The daemon replaces reclaimed nodes; the ASG only launches the group once."""
    pool = gpu_pool(one)
    assert pool["capacityRebalance"] is False
    assert (pool["desiredCapacity"], pool["minSize"], pool["maxSize"]) == (1, 0, 1)
    asg = one.one(ASG, f"{GPU_POOL}-{GPU_POOL}-r0")
    assert asg.inputs.get("name") is None  # auto-named: replaceable
    assert not one.of("aws:eks/nodeGroup:NodeGroup") or all(
        "system" in r.name and "nodeGroupName" not in r.inputs
        for r in one.of("aws:eks/nodeGroup:NodeGroup")
    )
    tags = {t["key"]: (t["value"], t["propagateAtLaunch"]) for t in pool["tags"]}
    assert tags["prov.dev/replica"] == ("kimi-k2-thinking-r0", True)
    assert tags["prov.dev/managed"] == ("true", True)
    # self-managed nodes join through an access entry of their own role
    entry = one.one("aws:eks/accessEntry:AccessEntry").inputs
    assert entry["type"] == "EC2_LINUX"
    cfg = node_config(one)["spec"]["cluster"]
    assert (
        cfg["cidr"]
        == "172.20.0.0/16"
        == one.one("aws:eks/cluster:Cluster").inputs["kubernetesNetworkConfig"]["serviceIpv4Cidr"]
    )
    assert cfg["apiServerEndpoint"] == "https://ABC.gr7.us-east-2.eks.amazonaws.com"


def test_two_node_pool_is_one_zone_in_a_placement_group_with_efa(two: StackRun) -> None:
    assert pool_types(two) == ["p5.48xlarge"]  # the only 8 x H100 type there
    assert pool_zones(two) == ["use2-az3"]  # a cluster placement group is one zone
    # EKS still gets a second zone for its control plane.
    assert sorted(s.inputs["availabilityZoneId"] for s in two.of(SUBNET)) == [
        "use2-az1",
        "use2-az3",
    ]
    assert gpu_pool(two)["desiredCapacity"] == 2
    pg = two.one("aws:ec2/placementGroup:PlacementGroup").inputs
    assert pg["strategy"] == "cluster"
    template = two.one(LAUNCH_TEMPLATE).inputs
    # The mocks name every AWS resource after its Pulumi name.
    assert template["placement"] == {"groupName": "kimi-k2-thinking-pg"}
    (nic,) = template["networkInterfaces"]
    assert nic["interfaceType"] == "efa"
    assert nic["securityGroups"] == ["sg-cluster"]


def test_efa_pools_keep_to_types_aws_says_have_efa(two: StackRun) -> None:
    """Checked against EC2's own DescribeInstanceTypes data (moto ships AWS's answers)."""
    import gzip
    from pathlib import Path

    import moto

    path = Path(moto.__file__).parent / "ec2/resources/instance_types.json.gz"
    with gzip.open(path) as f:
        types = json.loads(f.read())
    for t in pool_types(two):
        assert types[t]["NetworkInfo"]["EfaSupported"] is True, t
    from stacks.instances import EFA_TYPES

    aws_efa = {
        k
        for k, v in types.items()
        if v.get("GpuInfo") and v.get("NetworkInfo", {}).get("EfaSupported")
    }
    assert aws_efa == EFA_TYPES


def test_single_node_pool_has_no_placement_group(one: StackRun) -> None:
    assert not one.of("aws:ec2/placementGroup:PlacementGroup")
    template = one.one(LAUNCH_TEMPLATE).inputs
    assert "placement" not in template and "networkInterfaces" not in template


def test_launch_template_sizes_the_disk_for_the_weights(one: StackRun) -> None:
    template = one.one(LAUNCH_TEMPLATE).inputs
    (root,) = template["blockDeviceMappings"]
    # 594.2e9 B x 1.1 = 653.6e9 B = 608.7 GiB -> 609, + 100 GiB for the OS and the image.
    assert root["ebs"]["volumeSize"] == 709
    assert template["metadataOptions"]["httpTokens"] == "required"
    instance_tags = template["tagSpecifications"][0]["tags"]
    assert instance_tags["prov.dev/managed"] == "true"
    assert instance_tags["prov.dev/replica-size"] == "1"
    assert instance_tags["prov.dev/instance-types"] == "p5en.48xlarge"


def test_taints_tolerations_and_node_selector_match(one: StackRun, two: StackRun) -> None:
    for run in (one, two):
        (taint,) = node_config(run)["spec"]["kubelet"]["flags"][1:]
        assert taint == "--register-with-taints=nvidia.com/gpu=present:NoSchedule"
        key, rest = taint.split("=", 1)[1].split("=", 1)
        _value, effect = rest.split(":")
        labels = kubelet_flag(run, "--node-labels")
        for pod in pod_specs(run):
            assert any(
                t["key"] == key and t["operator"] == "Exists" and t["effect"] == effect
                for t in pod["tolerations"]
            )
            assert pod["nodeSelector"].items() <= labels.items()


def test_workloads_use_the_plans_gpus(one: StackRun, two: StackRun) -> None:
    for run, nodes in ((one, 1), (two, 2)):
        serving, *workers = pod_specs(run)  # the server, or the leader then the worker
        stops = []
        for pod in (serving, *workers):
            (c,) = pod["containers"]
            assert c["resources"]["requests"]["nvidia.com/gpu"] == "8"
            stops.append(int(c["lifecycle"]["preStop"]["exec"]["command"][1]))
        (c,) = serving["containers"]
        shutdown = int(c["args"][c["args"].index("--shutdown-timeout") + 1])
        assert serving["terminationGracePeriodSeconds"] >= shutdown + stops[0]
        for pod, stop in zip(workers, stops[1:], strict=True):  # up until the leader drained
            assert stop >= stops[0] + shutdown and pod["terminationGracePeriodSeconds"] > stop
        if nodes == 2:
            lws = run.one("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet").inputs
            assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
        (svc,) = run.of("kubernetes:core/v1:Service")
        assert svc.inputs["spec"]["type"] == "ClusterIP"
        assert run.of("kubernetes:policy/v1:PodDisruptionBudget")


def test_daemon_role_is_generated_from_the_daemons_declared_calls(one: StackRun) -> None:
    from provisioner import fleet

    queue_arn = f"arn:aws:sqs:us-east-2:{ACCOUNT}:kimi-k2-thinking-interruptions-events"
    node_role = f"arn:aws:role:us-east-2:{ACCOUNT}:role/kimi-k2-thinking-gpu-node"
    policy = json.loads(one.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert policy == fleet.iam_policy(queue_arn, node_role)
    statements = policy["Statement"]
    actions = {a for s in statements for a in s["Action"]}
    assert actions == {c.action for c in fleet.AWS_CALLS}
    assert all(s["Effect"] == "Allow" and "*" not in "".join(s["Action"]) for s in statements)
    resources = {a: s["Resource"] for s in statements for a in s["Action"]}
    assert {a for a, r in resources.items() if r == queue_arn} == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",  # `prov daemon --dry-run --once` checks the queue with it
    }
    assert resources["iam:PassRole"] == node_role  # only the GPU nodes' role
    role = one.one("aws:iam/role:Role", "kimi-k2-thinking-interruptions-daemon").inputs
    (trust,) = json.loads(role["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    binding = one.one("aws:eks/podIdentityAssociation:PodIdentityAssociation").inputs
    assert (binding["namespace"], binding["serviceAccount"]) == ("prov-system", "prov-daemon")
    queue = one.one("aws:sqs/queue:Queue").inputs
    # a message is held until the replacement is Ready (up to 15 min after the notice)
    assert queue["messageRetentionSeconds"] > 15 * 60


def test_the_stack_deploys_the_daemon(one: StackRun) -> None:
    from provisioner import fleet

    (_ns,) = [
        r
        for r in one.of("kubernetes:core/v1:Namespace")
        if r.inputs["metadata"]["name"] == "prov-system"
    ]
    dep = one.one("kubernetes:apps/v1:Deployment", "prov-daemon").inputs
    assert dep["metadata"]["namespace"] == "prov-system"
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "prov-daemon"
    args = spec["containers"][0]["args"]
    assert args[args.index("--queue-url") + 1] == (
        f"https://sqs.us-east-2.amazonaws.com/{ACCOUNT}/kimi-k2-thinking-interruptions-events"
    )
    assert "--leader-elect" in args and dep["spec"]["replicas"] == 2
    role = one.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole").inputs
    assert role["rules"] == fleet.rbac_rules(namespaced=False)
    sa = one.one("kubernetes:core/v1:ServiceAccount").inputs
    assert sa["metadata"] == {"name": "prov-daemon", "namespace": "prov-system"}


def test_interruption_events_reach_the_queue_and_only_they_may(one: StackRun) -> None:
    rules = one.of("aws:cloudwatch/eventRule:EventRule")
    detail_types = {json.loads(r.inputs["eventPattern"])["detail-type"][0] for r in rules}
    assert detail_types == {
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
        "AWS Health Event",
    }
    queue_arn = f"arn:aws:sqs:us-east-2:{ACCOUNT}:kimi-k2-thinking-interruptions-events"
    targets = one.of("aws:cloudwatch/eventTarget:EventTarget")
    assert {t.inputs["rule"] for t in targets} == {r.name for r in rules}
    assert {t.inputs["arn"] for t in targets} == {queue_arn}
    (statement,) = json.loads(one.one("aws:sqs/queuePolicy:QueuePolicy").inputs["policy"])[
        "Statement"
    ]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    rule_arns = {f"arn:aws:eventrule:us-east-2:{ACCOUNT}:eventrule/{r.name}" for r in rules}
    assert set(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == rule_arns


def test_resources_go_to_the_plans_region_and_the_new_cluster(one: StackRun) -> None:
    aws_provider = one.one("pulumi:providers:aws", "aws")
    assert aws_provider.inputs["region"] == "us-east-2"
    for r in one.resources:
        if r.typ.startswith("aws:"):
            assert "pulumi:providers:aws::aws::" in r.provider, r.typ
        if r.typ.startswith("kubernetes:"):
            assert "pulumi:providers:kubernetes::kimi-k2-thinking::" in r.provider, r.typ
    kubeconfig = json.loads(one.one("pulumi:providers:kubernetes").inputs["kubeconfig"])
    (cluster,) = kubeconfig["clusters"]
    assert cluster["cluster"]["server"] == "https://ABC.gr7.us-east-2.eks.amazonaws.com"
    (user,) = kubeconfig["users"]
    assert user["user"]["exec"]["args"][-2:] == ["--region", "us-east-2"]  # no stored token
    charts = {r.inputs["chart"]: r.inputs for r in one.of("kubernetes:helm.sh/v3:Release")}
    assert set(charts) == {"nvidia-device-plugin", "oci://registry.k8s.io/lws/charts/lws"}
    assert all(c.get("version") for c in charts.values())  # pinned


def test_components_and_secrets(one: StackRun) -> None:
    types = {r.typ for r in one.resources}
    assert {"prov:aws:Cluster", "prov:aws:GpuNodePool", "prov:k8s:VllmService"} <= types
    assert "prov:aws:InterruptionQueue" in types
    assert any("prov:aws:GpuNodePool$aws:autoscaling/group:Group" in u for u in one.urns)
    data = one.one("kubernetes:core/v1:Secret").inputs["stringData"]
    assert rpc.is_rpc_secret(data)
    assert rpc.unwrap_rpc_secret(data) == {"VLLM_API_KEY": API_KEY}
    for r in one.resources:
        assert API_KEY not in json.dumps(without_secrets(r.inputs)), r.typ
    assert one.outputs["apiKey"] == (API_KEY, True)
    assert one.outputs["kubeconfig"][1] is True
    assert one.outputs["interruptionQueueUrl"] == (
        f"https://sqs.us-east-2.amazonaws.com/{ACCOUNT}/kimi-k2-thinking-interruptions-events",
        False,
    )


def test_namespace_is_created_and_imds_mode_replaces_the_queue_daemon(
    plans: dict[str, PlanFile],
) -> None:
    run = run_stack(plans["one_aws"], DeployOptions(namespace="serving", daemon="imds"))
    names = {r.inputs["metadata"]["name"] for r in run.of("kubernetes:core/v1:Namespace")}
    assert names == {"serving", "prov-system"}
    workload = run.one("kubernetes:apps/v1:Deployment", GPU_POOL).inputs
    assert workload["metadata"]["namespace"] == "serving"
    (ds,) = run.of("kubernetes:apps/v1:DaemonSet")
    assert (
        ds.inputs["spec"]["template"]["spec"]["nodeSelector"].items()
        <= kubelet_flag(run, "--node-labels").items()
    )  # it lands on the stack's GPU nodes
    assert [r.name for r in run.of("kubernetes:apps/v1:Deployment")] == [GPU_POOL]


def test_control_plane_subnets_avoid_zones_eks_refuses(
    plans: dict[str, PlanFile], one: StackRun
) -> None:
    import dataclasses

    from stacks.spec import build_spec

    spec = build_spec(plans["one_aws"].doc, DeployOptions())
    moved = dataclasses.replace(spec, vpc_zones=("use1-az3", "use1-az1", "use1-az2"))
    assert moved.control_plane_zones == ("use1-az1", "use1-az2")
    cluster = one.one("aws:eks/cluster:Cluster").inputs
    zone_of = {f"{s.name}-id": s.inputs["availabilityZoneId"] for s in one.of(SUBNET)}
    assert sorted(zone_of[i] for i in cluster["vpcConfig"]["subnetIds"]) == sorted(
        spec.control_plane_zones
    )
