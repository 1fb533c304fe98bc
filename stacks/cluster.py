"""Cluster (aws-eks target): VPC, EKS, a small system pool, the GPU and LWS controllers, the queue.

Public subnets only, one per zone: nodes reach the Hub through the internet gateway, not a NAT
gateway that would bill ~$0.045 per GB for every 594 GB download. Security groups admit only
the cluster's own traffic. GPU nodes are tainted, so a two-node on-demand system pool runs
CoreDNS, the LeaderWorkerSet controller and the interruption daemon.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from provisioner import fleet
from stacks.interruption_queue import InterruptionQueue

EKS_VERSION = "1.34"
#: Kubernetes Service CIDR, set explicitly: self-managed nodes' nodeadm config must name it.
SERVICE_CIDR = "172.20.0.0/16"
SYSTEM_INSTANCE_TYPE = "m7i.large"
VPC_CIDR = "10.42.0.0/16"
NVIDIA_DEVICE_PLUGIN = (
    "nvidia-device-plugin",
    "0.18.2",
    "https://nvidia.github.io/k8s-device-plugin",
)
LWS_CHART = ("oci://registry.k8s.io/lws/charts/lws", "0.8.0")

_CLUSTER_POLICIES = ["AmazonEKSClusterPolicy"]
_NODE_POLICIES = [
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
]


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
            ],
        }
    )


def kubeconfig(name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (no stored credentials)."""
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", name, "--region", region],
        }
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": name,
                    "cluster": {"server": endpoint, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        }
    )


class Cluster(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        region: str,
        zones: Sequence[str],
        control_plane_zones: Sequence[str],
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("prov:aws:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.vpc = aws.ec2.Vpc(
            name,
            cidr_block=VPC_CIDR,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tags,
            opts=child,
        )
        igw = aws.ec2.InternetGateway(name, vpc_id=self.vpc.id, tags=tags, opts=child)
        routes = aws.ec2.RouteTable(
            name,
            vpc_id=self.vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}],
            tags=tags,
            opts=child,
        )
        #: availability-zone id -> subnet id
        self.subnet_ids: dict[str, pulumi.Output[str]] = {}
        for i, zone in enumerate(zones):
            subnet = aws.ec2.Subnet(
                f"{name}-{zone}",
                vpc_id=self.vpc.id,
                availability_zone_id=zone,
                cidr_block=f"10.42.{i * 16}.0/20",
                map_public_ip_on_launch=True,
                tags={**tags, "kubernetes.io/role/elb": "1"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-{zone}", subnet_id=subnet.id, route_table_id=routes.id, opts=child
            )
            self.subnet_ids[zone] = subnet.id
        all_subnets = list(self.subnet_ids.values())
        # EKS refuses control-plane subnets in a few zones (stacks/spec.py): only the others
        control_plane_subnets = [self.subnet_ids[z] for z in control_plane_zones]

        cluster_role, cluster_policies = self._role(
            f"{name}-cluster", "eks.amazonaws.com", _CLUSTER_POLICIES, tags
        )
        self.node_role, node_policies = self._role(
            f"{name}-node", "ec2.amazonaws.com", _NODE_POLICIES, tags
        )
        # The GPU nodes are self-managed (stacks/gpu_node_pool.py): their own role, instance
        # profile and access entry (the system pool's role has EKS's managed entry already).
        self.gpu_node_role, gpu_policies = self._role(
            f"{name}-gpu-node", "ec2.amazonaws.com", _NODE_POLICIES, tags
        )
        self.gpu_instance_profile = aws.iam.InstanceProfile(
            f"{name}-gpu-node", role=self.gpu_node_role.name, tags=tags, opts=child
        )
        #: Node groups wait for these: a node whose role lacks them never joins the cluster.
        self.node_role_ready: list[pulumi.Resource] = list(node_policies)
        self.gpu_node_ready: list[pulumi.Resource] = list(gpu_policies)
        self.eks = aws.eks.Cluster(
            name,
            role_arn=cluster_role.arn,
            version=EKS_VERSION,
            kubernetes_network_config={"service_ipv4_cidr": SERVICE_CIDR},
            vpc_config={
                "subnet_ids": control_plane_subnets,
                "endpoint_public_access": True,
                "endpoint_private_access": True,
            },
            access_config={
                "authentication_mode": "API",
                "bootstrap_cluster_creator_admin_permissions": True,
            },
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=cluster_policies),
        )
        self.security_group_id = self.eks.vpc_config.cluster_security_group_id
        self.gpu_access = aws.eks.AccessEntry(
            f"{name}-gpu-node",
            cluster_name=self.eks.name,
            principal_arn=self.gpu_node_role.arn,
            type="EC2_LINUX",
            opts=child,
        )
        self.gpu_node_ready.append(self.gpu_access)
        # Auto-named (no node_group_name): a change that replaces the group can create the
        # new one before deleting the old.
        self.system_pool = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=self.eks.name,
            node_role_arn=self.node_role.arn,
            subnet_ids=all_subnets,
            instance_types=[SYSTEM_INSTANCE_TYPE],
            capacity_type="ON_DEMAND",
            ami_type="AL2023_x86_64_STANDARD",
            scaling_config={"desired_size": 2, "min_size": 1, "max_size": 3},
            labels={fleet.MANAGED: "true"},
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.node_role_ready),
        )
        pod_identity = aws.eks.Addon(
            f"{name}-pod-identity",
            cluster_name=self.eks.name,
            addon_name="eks-pod-identity-agent",
            opts=child,
        )
        self.kubeconfig = pulumi.Output.all(
            self.eks.name, self.eks.endpoint, self.eks.certificate_authority.data
        ).apply(lambda a: kubeconfig(a[0], a[1], a[2], region))
        self.provider = k8s.Provider(
            name, kubeconfig=self.kubeconfig, opts=pulumi.ResourceOptions(parent=self)
        )
        on_cluster = pulumi.ResourceOptions(
            parent=self, provider=self.provider, depends_on=[self.system_pool]
        )
        chart, version, repo = NVIDIA_DEVICE_PLUGIN
        self.device_plugin = k8s.helm.v3.Release(
            f"{name}-nvidia-device-plugin",
            chart=chart,
            version=version,
            repository_opts={"repo": repo},
            namespace="kube-system",
            values={
                "tolerations": [
                    {
                        "key": fleet.GPU_TAINT_KEY,
                        "operator": "Exists",
                        "effect": fleet.GPU_TAINT_EFFECT,
                    }
                ]
            },
            opts=on_cluster,
        )
        lws_chart, lws_version = LWS_CHART
        self.lws = k8s.helm.v3.Release(
            f"{name}-lws",
            chart=lws_chart,
            version=lws_version,
            namespace="lws-system",
            create_namespace=True,
            opts=on_cluster,
        )
        self.queue = InterruptionQueue(
            f"{name}-interruptions",
            cluster_name=self.eks.name,
            node_role_arn=self.gpu_node_role.arn,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[pod_identity]),
        )
        self.register_outputs(
            {
                "cluster_name": self.eks.name,
                "kubeconfig": pulumi.Output.secret(self.kubeconfig),
                "queue_url": self.queue.queue.url,
                "daemon_role_arn": self.queue.daemon_role.arn,
            }
        )

    def _role(
        self, name: str, service: str, policies: list[str], tags: dict[str, str]
    ) -> tuple[Any, list[Any]]:
        """An IAM role `service` may assume, with AWS-managed `policies` attached."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(name, assume_role_policy=_trust(service), tags=tags, opts=child)
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy}",
                role=role.name,
                policy_arn=f"arn:aws:iam::aws:policy/{policy}",
                opts=child,
            )
            for policy in policies
        ]
        return role, attachments
