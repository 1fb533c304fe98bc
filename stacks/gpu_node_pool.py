"""GpuNodePool: an EKS managed node group of the plan's GPU instances.

Spot or on-demand as the plan says; a spot pool also lists the same GPU shape in the region's
other instance types and zones (stacks/instances.py). Nodes run EKS's NVIDIA AL2023 AMI, carry
the GPU taint and prov's labels, and are tagged so the interruption daemon knows them.
Multi-node replicas get a cluster placement group (one zone) and an EFA interface.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pulumi
import pulumi_aws as aws

from stacks import labels as L
from stacks.spec import DeploySpec

AMI_TYPE = "AL2023_x86_64_NVIDIA"  # EKS's GPU AMI: NVIDIA driver and container toolkit
ROOT_DEVICE = "/dev/xvda"
ROOT_EXTRA_GIB = 100  # OS, the ~20 GB vLLM image, logs


def root_volume_gib(weight_bytes: int) -> int:
    """Root EBS volume: the weights cache (+10% for the Hub's other files) plus the rest."""
    return math.ceil(weight_bytes * 1.1 / 2**30) + ROOT_EXTRA_GIB


def node_labels(spec: DeploySpec) -> dict[str, str]:
    return {
        L.MANAGED: "true",
        L.POOL: spec.name,
        L.GPU: spec.plan.gpu,
        L.NVIDIA_GPU_PRESENT: "true",  # the device plugin chart schedules on this label
    }


def pool_tags(spec: DeploySpec, stack: str) -> dict[str, str]:
    return {
        L.MANAGED: "true",
        L.STACK: stack,
        L.POOL: spec.name,
        L.NODES_PER_REPLICA: str(spec.plan.nodes),
        L.MARKET: spec.plan.market,
        L.INSTANCE_TYPES: " ".join(spec.instance_types),
        L.ZONES: " ".join(spec.zones),
    }


class GpuNodePool(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        spec: DeploySpec,
        *,
        cluster_name: pulumi.Input[str],
        node_role_arn: pulumi.Input[str],
        subnet_ids: Sequence[pulumi.Input[str]],
        security_group_id: pulumi.Input[str],
        stack: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("prov:aws:GpuNodePool", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = pool_tags(spec, stack)
        template: dict[str, object] = {
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
            if spec.plan.fabric == "efa":
                # One EFA interface: pipeline stages exchange activations only (~hidden x 2 B
                # per token), far below one card's 100 Gb/s; one interface also keeps the
                # public IP that lets nodes reach the Hub without a NAT gateway.
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
        self.launch_template = aws.ec2.LaunchTemplate(
            f"{name}-lt", tags=tags, update_default_version=True, opts=child, **template
        )
        self.node_group = aws.eks.NodeGroup(
            name,
            cluster_name=cluster_name,
            node_group_name=f"{name}-gpu",
            node_role_arn=node_role_arn,
            subnet_ids=list(subnet_ids),
            capacity_type="SPOT" if spec.plan.market == "spot" else "ON_DEMAND",
            instance_types=list(spec.instance_types),
            ami_type=AMI_TYPE,
            # min 0: scale to zero to stop paying; max 2x: room for a replacement replica.
            scaling_config={
                "desired_size": spec.plan.nodes,
                "min_size": 0,
                "max_size": 2 * spec.plan.nodes,
            },
            labels=node_labels(spec),
            taints=[{"key": L.GPU_TAINT_KEY, "value": L.GPU_TAINT_VALUE, "effect": "NO_SCHEDULE"}],
            launch_template={
                "id": self.launch_template.id,
                "version": self.launch_template.latest_version.apply(str),
            },
            update_config={"max_unavailable": 1},
            tags=tags,
            # The daemon scales the pool during replacements; a later `up` must not undo it.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["scalingConfig.desiredSize"]),
        )
        self.register_outputs(
            {
                "node_group_name": self.node_group.node_group_name,
                "instance_types": list(spec.instance_types),
                "capacity_type": self.node_group.capacity_type,
            }
        )
