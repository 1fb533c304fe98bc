"""The Pulumi program: read the plan from stack config, build the components, export outputs.

Config (namespace `prov`, written by stacks/automation.py): `plan` (the plan document reduced
to one plan, JSON), the DeployOptions keys (`rank`, `target`, ...) and two secrets, `apiKey`
and the optional `hfToken`. Used as the Automation API's inline program and by __main__.py.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from provisioner import fleet
from provisioner.contract.document import PlanDocument
from stacks.options import DeployOptions
from stacks.spec import DeploySpec, build_spec


def spec_from_config(config: pulumi.Config) -> tuple[DeploySpec, DeployOptions]:
    doc = PlanDocument.model_validate(json.loads(config.require("plan")))
    options = DeployOptions.from_config(config.get)
    return build_spec(doc, options), options


def program() -> None:
    """The Pulumi program: everything `stack_outputs` builds, exported."""
    for key, value in stack_outputs().items():
        pulumi.export(key, value)


def stack_outputs() -> dict[str, Any]:
    """Create the resources for the configured plan; return the stack outputs by name."""
    from stacks.manifests import service_name
    from stacks.vllm_service import VllmService

    config = pulumi.Config("prov")
    spec, options = spec_from_config(config)
    api_key = config.require_secret("apiKey")
    hf_token = config.get_secret("hfToken")
    stack = pulumi.get_stack()

    outputs: dict[str, Any] = {}
    service_opts: pulumi.ResourceOptions | None = None
    after: list[Any] = []
    if spec.target == "aws-eks":
        import pulumi_aws as aws

        from stacks.cluster import EKS_VERSION, SERVICE_CIDR, Cluster
        from stacks.gpu_node_pool import GpuNodePool, pool_tags

        tags = pool_tags(spec, stack)
        # The plan's region, whatever the ambient AWS config says.
        aws_provider = aws.Provider("aws", region=spec.plan.region)
        cluster = Cluster(
            spec.name,
            region=spec.plan.region,
            zones=spec.vpc_zones,
            control_plane_zones=spec.control_plane_zones,
            tags=tags,
            opts=pulumi.ResourceOptions(provider=aws_provider),
        )
        pool = GpuNodePool(
            spec.name,
            spec,
            cluster_name=cluster.eks.name,
            cluster_endpoint=cluster.eks.endpoint,
            cluster_ca=cluster.eks.certificate_authority.data,
            service_cidr=SERVICE_CIDR,
            eks_version=EKS_VERSION,
            instance_profile_arn=cluster.gpu_instance_profile.arn,
            subnet_ids=cluster.subnet_ids,
            security_group_id=cluster.security_group_id,
            stack=stack,
            opts=pulumi.ResourceOptions(provider=aws_provider, depends_on=cluster.gpu_node_ready),
        )
        daemon = _deploy_daemon(spec, options, cluster)
        spec, weights = _weights_bucket(spec, stack, tags, aws_provider)
        weights += _weights_access(spec, cluster, aws_provider, weights)
        after = [pool, cluster.device_plugin, cluster.lws, *daemon, *weights]
        service_opts = pulumi.ResourceOptions(provider=cluster.provider, depends_on=after)
        outputs["clusterName"] = cluster.eks.name
        outputs["region"] = spec.plan.region
        outputs["launchTemplate"] = pool.launch_template.id
        outputs["replicaGroups"] = [g.name for g in pool.groups]
        outputs["instanceTypes"] = list(spec.instance_types)
        outputs["interruptionQueueUrl"] = cluster.queue.queue.url
        outputs["daemonRoleArn"] = cluster.queue.daemon_role.arn
        outputs["kubeconfig"] = pulumi.Output.secret(cluster.kubeconfig)
    elif options.kube_context:
        provider = k8s.Provider("kubeconfig", context=options.kube_context)
        service_opts = pulumi.ResourceOptions(provider=provider)

    if spec.weights_uri is not None:
        outputs["weightsBucket"] = spec.weights_uri
    service = VllmService(
        spec.name, spec, api_key=api_key, hf_token=hf_token, opts=service_opts, after=after
    )
    outputs["endpoint"] = service.endpoint
    outputs["namespace"] = spec.namespace
    outputs["service"] = f"{spec.namespace}/{service_name(spec)}"
    p = spec.plan
    outputs["plan"] = (
        f"rank {p.rank}: {p.nodes} x {p.instance_type} {spec.layout} {p.market} "
        f"${p.usd_per_hour:.2f}/h"
    )
    outputs["apiKey"] = api_key
    return outputs


def _deploy_daemon(spec: DeploySpec, options: DeployOptions, cluster: Any) -> list[Any]:
    """The interruption daemon on the system pool: its namespace, RBAC and Deployment (or the
    IMDS DaemonSet), generated from provisioner/fleet.py like its IAM policy."""
    if options.daemon == "none":
        return []
    from stacks.daemon import build_daemon_manifests
    from stacks.vllm_service import apply_manifest

    opts = pulumi.ResourceOptions(
        provider=cluster.provider, depends_on=[cluster.system_pool, cluster.queue]
    )

    def objects(url: str) -> list[dict[str, Any]]:
        return build_daemon_manifests(
            url,
            spec.plan.region,
            options.daemon_image,
            options.daemon,
            prewarm=spec.prewarm_on_rebalance,
            time_to_serve_s=spec.time_to_serve_seconds,
        )

    # the manifests need the queue URL, an Output: build them with a placeholder, then pass
    # the real URL into the one field that holds it (the container args)
    made = []
    for obj in objects("QUEUE_URL"):
        if obj["kind"] == "Deployment":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            args = container["args"]
            container["args"] = cluster.queue.queue.url.apply(
                lambda url, a=args: [url if x == "QUEUE_URL" else x for x in a]
            )
        made.append(apply_manifest(obj, opts))
    return made


def _weights_bucket(
    spec: DeploySpec, stack: str, tags: dict[str, str], provider: Any
) -> tuple[DeploySpec, list[Any]]:
    """--weights s3 without --weights-bucket: name the bucket from the account, region and
    stack, adopt it when an earlier deploy retained it, else create it (stacks/weights_bucket.py).
    Returns the spec with the bucket named and the resources to wait for."""
    if not spec.storage.bucket_created:
        return spec, []
    import pulumi_aws as aws

    from stacks.weights_bucket import WeightsBucket
    from stacks.weights_path import created_bucket_name

    invoke = pulumi.InvokeOptions(provider=provider)
    account = aws.get_caller_identity(opts=invoke).account_id
    name = created_bucket_name(account, spec.plan.region, stack)
    try:
        aws.s3.get_bucket(bucket=name, opts=invoke)
        exists = True
    except Exception:
        exists = False
    made = WeightsBucket(
        spec.name,
        name,
        keep=spec.storage.keep_bucket,
        exists=exists,
        # only what cannot change for this name: an adopted bucket's inputs must match it
        tags={k: tags[k] for k in (fleet.MANAGED, fleet.STACK)},
        opts=pulumi.ResourceOptions(provider=provider),
    )
    return spec.with_bucket(name), [made]


def _weights_access(
    spec: DeploySpec, cluster: Any, provider: Any, bucket_made: list[Any]
) -> list[Any]:
    """--weights s3: the GPU nodes' role may read the weights bucket's prefix, nothing more, and
    with the compile cache read and write ``cache/PREFIX``; with --fill-weights the fill Job's
    ServiceAccount gets a write role on the prefix through EKS Pod Identity. Every policy is
    generated from provisioner/fleet.py. The vLLM pods reach the node's credentials through
    IMDSv2 (hop limit 2, stacks/gpu_node_pool.py)."""
    if spec.weights_bucket is None:
        return []
    import pulumi_aws as aws

    from stacks.interruption_queue import POD_IDENTITY_TRUST

    opts = pulumi.ResourceOptions(provider=provider, depends_on=bucket_made)
    bucket, prefix = spec.weights_bucket, spec.weights_prefix
    made: list[Any] = [
        aws.iam.RolePolicy(
            f"{spec.name}-weights-read",
            role=cluster.gpu_node_role.id,
            policy=json.dumps(fleet.weights_read_policy(bucket, prefix)),
            opts=opts,
        )
    ]
    if spec.cache_prefix is not None:
        made.append(
            aws.iam.RolePolicy(
                f"{spec.name}-compile-cache",
                role=cluster.gpu_node_role.id,
                policy=json.dumps(fleet.compile_cache_policy(bucket, spec.cache_prefix)),
                opts=opts,
            )
        )
    if spec.fill_weights:
        role = aws.iam.Role(
            f"{spec.name}-weights-fill",
            assume_role_policy=json.dumps(POD_IDENTITY_TRUST),
            opts=opts,
        )
        made += [
            aws.iam.RolePolicy(
                f"{spec.name}-weights-fill",
                role=role.id,
                policy=json.dumps(fleet.weights_fill_policy(bucket, prefix)),
                opts=opts,
            ),
            aws.eks.PodIdentityAssociation(
                f"{spec.name}-weights-fill",
                cluster_name=cluster.eks.name,
                namespace=spec.namespace,
                service_account=fleet.WEIGHTS_FILL_SERVICE_ACCOUNT,
                role_arn=role.arn,
                opts=opts,
            ),
        ]
    return made
