"""The stack's recorded AWS resources made real in a moto server, its Kubernetes objects in kmock.

The Pulumi program ran under mocks (tests/stacks/stack_harness.run_stack); each registration
kept its type and inputs. Here those inputs become the same calls `pulumi up` would make, on a
moto server: the VPC's subnets (by zone id), the launch template (its user data, tags, disk),
the replica group's Auto Scaling group (which launches the GPU instance with the stack's
tags), the queue (its retention and visibility), the EventBridge rules and their targets, and
an IAM user carrying exactly the daemon role's policy document. Kubernetes objects (the
namespaces, the vLLM Deployment, its Service and PodDisruptionBudget) are POSTed to kmock.

What moto cannot take is replaced, and said here: the AMI is ``resolve:ssm:...`` (moto does
not resolve SSM parameters in launch templates) -> a made-up AMI id; moto's ASG launches from a
MixedInstancesPolicy without setting the instance type -> the launch template also gets the
first override's type; the instance profile and security group ids are mock values -> left
out (moto checks neither, nor iam:PassRole); the daemon gets an IAM *user* with the role's
policy (moto enforces user policies; in EKS, Pod Identity hands the role's credentials).
"""

from __future__ import annotations

import base64
import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from stack_harness import StackRun, numbers_as_ints

from provisioner import fleet

AMI = "ami-0123456789abcdef0"
#: AWS authorises SQS's batch calls with the single-message action (SQS Developer Guide, "Amazon
#: SQS API permissions: Actions and resource reference": DeleteMessageBatch -> sqs:DeleteMessage,
#: ChangeMessageVisibilityBatch -> sqs:ChangeMessageVisibility); moto checks an action named
#: after the call. The daemon's user gets the alias of each action it holds, nothing more.
MOTO_BATCH_ALIASES = {
    "sqs:DeleteMessage": "sqs:DeleteMessageBatch",
    "sqs:ChangeMessageVisibility": "sqs:ChangeMessageVisibilityBatch",
}


def as_moto_policy(policy: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(policy))
    for st in out["Statement"]:
        st["Action"] = st["Action"] + [
            MOTO_BATCH_ALIASES[a] for a in st["Action"] if a in MOTO_BATCH_ALIASES
        ]
    return out


@dataclass
class Materialised:
    region: str
    queue_url: str
    subnets: dict[str, str]  # Pulumi id -> moto subnet id
    groups: list[str]  # ASG names
    daemon_keys: tuple[str, str]  # access key id, secret
    node_labels: dict[str, str]
    node_taints: list[dict[str, str]]
    namespace: str
    deployment: dict[str, Any]
    service: dict[str, Any]
    pdb: dict[str, Any]
    policy: dict[str, Any] = field(default_factory=dict)


def _inputs(run: StackRun, typ: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.name, numbers_as_ints(dict(r.inputs))) for r in run.of(typ)]


def kubelet_flags(user_data_b64: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """--node-labels and --register-with-taints out of the launch template's nodeadm config."""
    text = base64.b64decode(user_data_b64).decode()
    config = json.loads(text.split("application/node.eks.aws\n\n", 1)[1].split("\n\n--", 1)[0])
    labels: dict[str, str] = {}
    taints: list[dict[str, str]] = []
    for flag in config["spec"]["kubelet"]["flags"]:
        name, _, value = flag.partition("=")
        if name == "--node-labels":
            labels = dict(kv.split("=", 1) for kv in value.split(","))
        elif name == "--register-with-taints":
            for t in value.split(","):
                kv, effect = t.rsplit(":", 1)
                key, val = kv.split("=", 1)
                taints.append({"key": key, "value": val, "effect": effect})
    return labels, taints


def materialise(
    run: StackRun, clients: Any, moto_url: str, visibility_seconds: int, kube_url: str
) -> Materialised:
    ec2, asg, sqs, events, iam = (
        clients(n) for n in ("ec2", "autoscaling", "sqs", "events", "iam")
    )
    region = run.one("pulumi:providers:aws", "aws").inputs["region"]
    ((_, vpc_in),) = _inputs(run, "aws:ec2/vpc:Vpc")
    vpc = ec2.create_vpc(CidrBlock=vpc_in["cidrBlock"])["Vpc"]["VpcId"]
    subnets: dict[str, str] = {}
    for name, s in _inputs(run, "aws:ec2/subnet:Subnet"):
        sid = ec2.create_subnet(
            VpcId=vpc, CidrBlock=s["cidrBlock"], AvailabilityZoneId=s["availabilityZoneId"]
        )["Subnet"]["SubnetId"]
        ec2.create_tags(
            Resources=[sid], Tags=[{"Key": k, "Value": v} for k, v in s["tags"].items()]
        )
        subnets[f"{name}-id"] = sid

    ((lt_name, lt),) = _inputs(run, "aws:ec2/launchTemplate:LaunchTemplate")
    ((asg_name, group),) = _inputs(run, "aws:autoscaling/group:Group")
    overrides = group["mixedInstancesPolicy"]["launchTemplate"]["overrides"]
    data: dict[str, Any] = {
        "ImageId": AMI,  # resolve:ssm:... in the stack
        "InstanceType": overrides[0]["instanceType"],  # moto: see the module docstring
        "UserData": lt["userData"],
        "MetadataOptions": {
            "HttpTokens": lt["metadataOptions"]["httpTokens"],
            "HttpPutResponseHopLimit": lt["metadataOptions"]["httpPutResponseHopLimit"],
        },
        "TagSpecifications": [
            {
                "ResourceType": spec["resourceType"],
                "Tags": [{"Key": k, "Value": v} for k, v in spec["tags"].items()],
            }
            for spec in lt["tagSpecifications"]
        ],
    }
    lt_id = ec2.create_launch_template(LaunchTemplateName=lt_name, LaunchTemplateData=data)[
        "LaunchTemplate"
    ]["LaunchTemplateId"]
    dist = group["mixedInstancesPolicy"]["instancesDistribution"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName=asg_name,
        MinSize=group["minSize"],
        MaxSize=group["maxSize"],
        DesiredCapacity=group["desiredCapacity"],
        CapacityRebalance=group["capacityRebalance"],
        VPCZoneIdentifier=",".join(subnets[i] for i in group["vpcZoneIdentifiers"]),
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateId": lt_id, "Version": "$Latest"},
                "Overrides": [{"InstanceType": o["instanceType"]} for o in overrides],
            },
            "InstancesDistribution": {
                "OnDemandPercentageAboveBaseCapacity": dist["onDemandPercentageAboveBaseCapacity"],
                "SpotAllocationStrategy": dist["spotAllocationStrategy"],
            },
        },
        Tags=[
            {
                "Key": t["key"],
                "Value": t["value"],
                "PropagateAtLaunch": t["propagateAtLaunch"],
                "ResourceId": asg_name,
                "ResourceType": "auto-scaling-group",
            }
            for t in group["tags"]
        ],
    )

    ((q_name, q),) = _inputs(run, "aws:sqs/queue:Queue")
    queue_url = sqs.create_queue(
        QueueName=q_name,
        Attributes={
            "MessageRetentionPeriod": str(q["messageRetentionSeconds"]),
            "VisibilityTimeout": str(visibility_seconds),  # the stack's, time-scaled
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    for name, rule in _inputs(run, "aws:cloudwatch/eventRule:EventRule"):
        events.put_rule(Name=name, EventPattern=rule["eventPattern"])
    for name, target in _inputs(run, "aws:cloudwatch/eventTarget:EventTarget"):
        assert target["arn"] == queue_arn, (target["arn"], queue_arn)  # same account and name
        events.put_targets(Rule=target["rule"], Targets=[{"Id": name[:64], "Arn": queue_arn}])

    policy = daemon_policy(run)
    iam.create_user(UserName="prov-daemon")
    iam.put_user_policy(
        UserName="prov-daemon",
        PolicyName="daemon",
        PolicyDocument=json.dumps(as_moto_policy(policy)),
    )
    key = iam.create_access_key(UserName="prov-daemon")["AccessKey"]

    labels, taints = kubelet_flags(lt["userData"])
    objs = _k8s_objects(run)
    for obj in objs.values():
        post(kube_url, obj)
    return Materialised(
        region=region,
        queue_url=queue_url,
        subnets=subnets,
        groups=[asg_name],
        daemon_keys=(key["AccessKeyId"], key["SecretAccessKey"]),
        node_labels=labels,
        node_taints=taints,
        namespace=objs["Deployment"]["metadata"]["namespace"],
        deployment=objs["Deployment"],
        service=objs["Service"],
        pdb=objs["PodDisruptionBudget"],
        policy=policy,
    )


def daemon_policy(run: StackRun) -> dict[str, Any]:
    """The IAM policy of the daemon's role: the role its pod identity names (a stack has other
    role policies: the weights bucket's, the compile cache's), every statement attached to it."""
    (assoc,) = [
        a
        for _, a in _inputs(run, "aws:eks/podIdentityAssociation:PodIdentityAssociation")
        if (a["namespace"], a["serviceAccount"]) == (fleet.DAEMON_NAMESPACE, fleet.DAEMON_NAME)
    ]
    role_id = f"{assoc['roleArn'].rsplit('/', 1)[1]}-id"  # stack_harness's mock ids: NAME-id
    docs = [
        json.loads(p["policy"])
        for _, p in _inputs(run, "aws:iam/rolePolicy:RolePolicy")
        if p["role"] == role_id
    ]
    assert docs, f"no role policy on the daemon's role {role_id}"
    return {"Version": docs[0]["Version"], "Statement": [s for d in docs for s in d["Statement"]]}


def _k8s_objects(run: StackRun) -> dict[str, dict[str, Any]]:
    """The vLLM workload's objects as the stack rendered them (the daemon's own are not run
    here: its process is started by the test with the Deployment's arguments)."""
    out: dict[str, dict[str, Any]] = {}
    kinds = {
        "kubernetes:apps/v1:Deployment": ("apps/v1", "Deployment"),
        "kubernetes:core/v1:Service": ("v1", "Service"),
        "kubernetes:policy/v1:PodDisruptionBudget": ("policy/v1", "PodDisruptionBudget"),
    }
    for r in run.resources:
        if r.typ in kinds and r.name != "prov-daemon":
            api, kind = kinds[r.typ]
            inputs = numbers_as_ints(dict(r.inputs))
            out[kind] = {"apiVersion": api, "kind": kind, **inputs}
    return out


def post(kube_url: str, obj: dict[str, Any]) -> None:
    api, kind = obj["apiVersion"], obj["kind"]
    ns = obj["metadata"].get("namespace")
    plural = {"Deployment": "deployments", "Service": "services"}.get(kind, "poddisruptionbudgets")
    base = f"/api/{api}" if api == "v1" else f"/apis/{api}"
    url = f"{kube_url}{base}/namespaces/{ns}/{plural}"
    req = urllib.request.Request(
        url,
        data=json.dumps(obj).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=10).read()
