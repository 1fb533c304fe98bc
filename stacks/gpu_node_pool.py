"""GpuNodePool: the plan's GPU nodes as self-managed capacity the interruption daemon can own.

One launch template (EKS's NVIDIA AL2023 AMI, resolved from its public SSM parameter at launch;
nodeadm user data that joins the cluster with prov's labels and the GPU taint; the instance
tags of provisioner/fleet.py) and one Auto Scaling group per replica group that launches it
once. Capacity Rebalancing is off and the group's desired size is not Pulumi's to restore: on a
notice the daemon detaches the reclaimed group (the ASG launches nothing) and launches the
replacement itself from this launch template. That makes the daemon the one actor replacing a
reclaimed node (docs/daemon.md). An EKS managed node group cannot be used: its spot groups
always run Capacity Rebalancing, which would replace and drain the same node a second time.

Multi-node replicas get a cluster placement group (one zone) and, on an EFA fabric, one EFA
interface; build_spec keeps such a pool to EFA-capable instance types.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from provisioner import fleet
from stacks.spec import DeploySpec

#: EKS's NVIDIA AL2023 AMI for the cluster version, resolved by EC2 at every launch (also the
#: daemon's replacements): the launch template never pins a stale image.
AMI_PARAMETER = (
    "/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/x86_64/nvidia/recommended/image_id"
)
ROOT_DEVICE = "/dev/xvda"
ROOT_EXTRA_GIB = 100  # OS, the ~20 GB vLLM image, logs
BOUNDARY = "PROVBOUNDARY"


def root_volume_gib(weight_bytes: int) -> int:
    """Root EBS volume: the weights cache (+10% for the Hub's other files) plus the rest."""
    return math.ceil(weight_bytes * 1.1 / 2**30) + ROOT_EXTRA_GIB


def node_labels(spec: DeploySpec) -> dict[str, str]:
    return {
        fleet.MANAGED: fleet.MANAGED_VALUE,
        fleet.POOL: spec.name,
        fleet.GPU: spec.plan.gpu,
        fleet.NVIDIA_GPU_PRESENT: "true",  # the device plugin chart schedules on this label
    }


def pool_tags(spec: DeploySpec, stack: str) -> dict[str, str]:
    return {
        fleet.MANAGED: fleet.MANAGED_VALUE,
        fleet.STACK: stack,
        fleet.POOL: spec.name,
        fleet.REPLICA_SIZE: str(spec.plan.nodes),
        fleet.MARKET: spec.plan.market,
        fleet.INSTANCE_TYPES: fleet.tag_list(spec.instance_types),
        fleet.ZONES: fleet.tag_list(spec.zones),
    }


def replica_id(spec: DeploySpec, index: int) -> str:
    return f"{spec.name}-r{index}"


def node_user_data(
    cluster: str, endpoint: str, ca_data: str, service_cidr: str, labels: dict[str, str]
) -> str:
    """nodeadm's NodeConfig (AL2023) as MIME multipart, base64 for the launch template."""
    label_flag = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    taint = f"{fleet.GPU_TAINT_KEY}={fleet.GPU_TAINT_VALUE}:{fleet.GPU_TAINT_EFFECT}"
    config = {
        "apiVersion": "node.eks.aws/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": cluster,
                "apiServerEndpoint": endpoint,
                "certificateAuthority": ca_data,
                "cidr": service_cidr,
            },
            "kubelet": {
                "flags": [f"--node-labels={label_flag}", f"--register-with-taints={taint}"]
            },
        },
    }
    text = (
        f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{BOUNDARY}"\n\n'
        f"--{BOUNDARY}\nContent-Type: application/node.eks.aws\n\n"
        f"{json.dumps(config, indent=1)}\n\n--{BOUNDARY}--\n"
    )
    return base64.b64encode(text.encode()).decode()


class GpuNodePool(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        spec: DeploySpec,
        *,
        cluster_name: pulumi.Input[str],
        cluster_endpoint: pulumi.Input[str],
        cluster_ca: pulumi.Input[str],
        service_cidr: str,
        eks_version: str,
        instance_profile_arn: pulumi.Input[str],
        subnet_ids: Mapping[str, pulumi.Input[str]],
        security_group_id: pulumi.Input[str],
        stack: str,
        replicas: int = 1,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("prov:aws:GpuNodePool", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = pool_tags(spec, stack)
        user_data = pulumi.Output.all(cluster_name, cluster_endpoint, cluster_ca).apply(
            lambda a: node_user_data(a[0], a[1], a[2], service_cidr, node_labels(spec))
        )
        template: dict[str, object] = {
            "image_id": "resolve:ssm:" + AMI_PARAMETER.format(version=eks_version),
            "user_data": user_data,
            "iam_instance_profile": {"arn": instance_profile_arn},
            "block_device_mappings": [
                {
                    "device_name": ROOT_DEVICE,
                    "ebs": {
                        "volume_size": root_volume_gib(spec.weight_bytes),
                        "volume_type": "gp3",
                        "iops": 16000,  # gp3's maximum: the weights load from here
                        "throughput": 1000,
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            # IMDSv2 only; hop limit 2 lets the daemon's pods read spot notices.
            "metadata_options": {
                "http_endpoint": "enabled",
                "http_tokens": "required",
                "http_put_response_hop_limit": 2,
            },
            "tag_specifications": [
                {"resource_type": "instance", "tags": tags},
                {"resource_type": "volume", "tags": tags},
            ],
        }
        self.placement_group: aws.ec2.PlacementGroup | None = None
        if spec.multi_node:
            self.placement_group = aws.ec2.PlacementGroup(
                f"{name}-pg", strategy="cluster", tags=tags, opts=child
            )
            template["placement"] = {"group_name": self.placement_group.name}
        if spec.uses_efa:
            # One EFA interface: pipeline stages exchange activations only (~hidden x 2 B per
            # token), far below one card's 100 Gb/s; one interface also keeps the public IP
            # that lets nodes reach the Hub without a NAT gateway.
            template["network_interfaces"] = [
                {
                    "device_index": 0,
                    "network_card_index": 0,
                    "interface_type": "efa",
                    "associate_public_ip_address": "true",
                    "delete_on_termination": "true",
                    "security_groups": [security_group_id],
                }
            ]
        else:
            template["vpc_security_group_ids"] = [security_group_id]
        # Auto-named (a random suffix): a change that needs a new template or group creates
        # the new one before deleting the old.
        self.launch_template = aws.ec2.LaunchTemplate(
            f"{name}-lt", tags=tags, update_default_version=True, opts=child, **template
        )
        # A placement group lives in one zone: a multi-node replica launches in the plan's.
        zones = spec.zones[:1] if spec.multi_node else spec.zones
        spot = spec.plan.market == "spot"
        self.groups = []
        for index in range(replicas):
            replica = replica_id(spec, index)
            group_tags = {
                **tags,
                **fleet.replica_asg_tags(spec.name, replica),  # how the daemon finds it
                "Name": f"{spec.name}-gpu",
            }
            self.groups.append(
                aws.autoscaling.Group(
                    f"{name}-{replica}",
                    vpc_zone_identifiers=[subnet_ids[z] for z in zones],
                    desired_capacity=spec.plan.nodes,
                    min_size=0,  # the daemon detaches a reclaimed group: desired drops to 0
                    max_size=spec.plan.nodes,
                    capacity_rebalance=False,  # the daemon replaces; the ASG must not
                    mixed_instances_policy={
                        "instances_distribution": {
                            "on_demand_base_capacity": 0,
                            "on_demand_percentage_above_base_capacity": 0 if spot else 100,
                            "spot_allocation_strategy": "price-capacity-optimized",
                        },
                        "launch_template": {
                            "launch_template_specification": {
                                "launch_template_id": self.launch_template.id,
                                "version": "$Latest",
                            },
                            "overrides": [{"instance_type": t} for t in spec.instance_types],
                        },
                    },
                    tags=[
                        {"key": k, "value": v, "propagate_at_launch": True}
                        for k, v in group_tags.items()
                    ],
                    # The daemon owns the size after launch: an `up` must not refill a group
                    # it detached (its replacement already serves).
                    opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desiredCapacity"]),
                )
            )
        self.register_outputs(
            {
                "launch_template_id": self.launch_template.id,
                "instance_types": list(spec.instance_types),
                "groups": [g.name for g in self.groups],
            }
        )
