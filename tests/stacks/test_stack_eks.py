"""The Pulumi program, aws-eks target (Cluster + GpuNodePool + VllmService), under mocks.

Plans quoted with --cloud aws. The expected instance types and zones are read by hand off
pricing/data/offers.csv (us-east-2 rows), and each test first checks the plan is still the
one those rows describe, so a changed snapshot fails loudly rather than silently.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi.runtime import rpc
from stack_harness import ACCOUNT, API_KEY, PlanFile, StackRun, run_stack, without_secrets

from stacks.spec import DeployOptions

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SUBNET = "aws:ec2/subnet:Subnet"
GPU_POOL = "kimi-k2-thinking"  # the release name, from moonshotai/Kimi-K2-Thinking
# pulumi_aws warns about one of its own deprecated resources when its ec2 module loads.
pytestmark = pytest.mark.filterwarnings("ignore:aws.ec2/encryptioncontrol:DeprecationWarning")
DAEMON_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "ec2:DescribeInstances",
    "autoscaling:DescribeAutoScalingGroups",
    "eks:DescribeNodegroup",
    "eks:UpdateNodegroupConfig",
}


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
    return run.one(NODE_GROUP, GPU_POOL).inputs


def pool_zones(run: StackRun) -> list[str]:
    zone_of = {f"{s.name}-id": s.inputs["availabilityZoneId"] for s in run.of(SUBNET)}
    return [zone_of[i] for i in gpu_pool(run)["subnetIds"]]


def pod_specs(run: StackRun) -> list[dict[str, Any]]:
    deployments = run.of("kubernetes:apps/v1:Deployment")
    if deployments:
        return [deployments[0].inputs["spec"]["template"]["spec"]]
    lws = run.one("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet").inputs["spec"]
    t = lws["leaderWorkerTemplate"]
    return [t["leaderTemplate"]["spec"], t["workerTemplate"]["spec"]]


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Kubernetes' rule, with EKS's effect spelling (NO_SCHEDULE) on the taint."""
    effect = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute"}[taint["effect"]]
    if toleration.get("effect") not in (None, effect):
        return False
    if toleration.get("operator") == "Exists":
        return toleration.get("key") in (None, taint["key"])
    return toleration.get("key") == taint["key"] and toleration.get("value") == taint["value"]


def test_spot_pool_lists_the_alternative_types_and_zones(one: StackRun) -> None:
    pool = gpu_pool(one)
    assert pool["capacityType"] == "SPOT"
    # us-east-2 rents 8 x H200 as p5en.48xlarge (az1, az2, az3); p5e is capacity blocks only.
    assert pool["instanceTypes"] == ["p5en.48xlarge"]
    assert pool_zones(one) == ["use2-az3", "use2-az1", "use2-az2"]
    assert pool["amiType"] == "AL2023_x86_64_NVIDIA"
    assert pool["scalingConfig"] == {"desiredSize": 1.0, "minSize": 0.0, "maxSize": 2.0}


def test_two_node_pool_is_one_zone_in_a_placement_group_with_efa(two: StackRun) -> None:
    pool = gpu_pool(two)
    assert pool["capacityType"] == "SPOT"
    assert pool["instanceTypes"] == ["p5.48xlarge"]  # the only 8 x H100 type there
    assert pool_zones(two) == ["use2-az3"]  # a cluster placement group is one zone
    # EKS still gets a second zone for its control plane.
    assert sorted(s.inputs["availabilityZoneId"] for s in two.of(SUBNET)) == [
        "use2-az1",
        "use2-az3",
    ]
    assert pool["scalingConfig"]["desiredSize"] == 2
    pg = two.one("aws:ec2/placementGroup:PlacementGroup").inputs
    assert pg["strategy"] == "cluster"
    template = two.one(LAUNCH_TEMPLATE).inputs
    # The mocks name every AWS resource after its Pulumi name.
    assert template["placement"] == {"groupName": "kimi-k2-thinking-pg"}
    (nic,) = template["networkInterfaces"]
    assert nic["interfaceType"] == "efa"
    assert nic["securityGroups"] == ["sg-cluster"]


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
    assert instance_tags["prov/managed"] == "true"
    assert instance_tags["prov/nodes-per-replica"] == "1"
    assert instance_tags["prov/instance-types"] == "p5en.48xlarge"


def test_taints_tolerations_and_node_selector_match(one: StackRun, two: StackRun) -> None:
    for run in (one, two):
        pool = gpu_pool(run)
        assert pool["taints"] == [
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
        ]
        for pod in pod_specs(run):
            for taint in pool["taints"]:
                assert any(tolerates(t, taint) for t in pod["tolerations"])
            assert pod["nodeSelector"].items() <= pool["labels"].items()


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


def test_daemon_role_grants_only_what_the_daemon_needs(one: StackRun) -> None:
    queue_arn = f"arn:aws:sqs:us-east-2:{ACCOUNT}:kimi-k2-thinking-interruptions-events"
    policy = json.loads(one.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    statements = policy["Statement"]
    actions = {a for s in statements for a in s["Action"]}
    assert actions == DAEMON_ACTIONS
    assert all(s["Effect"] == "Allow" and "*" not in "".join(s["Action"]) for s in statements)
    resources = {a: s["Resource"] for s in statements for a in s["Action"]}
    for action in DAEMON_ACTIONS:
        if action.startswith("sqs:"):
            assert resources[action] == queue_arn
        elif action.startswith("eks:"):  # node groups of this cluster only
            assert resources[action] == (
                f"arn:aws:eks:us-east-2:{ACCOUNT}:nodegroup/kimi-k2-thinking/*/*"
            )
        else:  # Describe* has no resource-level permissions in IAM
            assert action.split(":")[1].startswith("Describe") and resources[action] == "*"
    role = one.one("aws:iam/role:Role", "kimi-k2-thinking-interruptions-daemon").inputs
    (trust,) = json.loads(role["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    binding = one.one("aws:eks/podIdentityAssociation:PodIdentityAssociation").inputs
    assert (binding["namespace"], binding["serviceAccount"]) == ("prov-system", "prov-daemon")


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
    assert any("prov:aws:GpuNodePool$aws:eks/nodeGroup:NodeGroup" in u for u in one.urns)
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
