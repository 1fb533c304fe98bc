"""VllmService: the manifests of stacks/manifests.py as pulumi_kubernetes resources.

Typed resources are built from the very dicts `--render` writes (the LeaderWorkerSet as a
CustomResource), plus the Secret with the HF token and the vLLM API key, which only Pulumi
creates: its values stay Pulumi secrets end to end.
"""

from __future__ import annotations

from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from stacks import manifests as M
from stacks.spec import PORT, DeploySpec

# Pulumi waits for the workload (and the Service's endpoints) to be ready; a big model takes
# the whole startup budget to load, so its wait must too.
_AWAIT_MARGIN_SECONDS = 600
#: --fill-weights: 594 GB from the Hub at the measured 0.69 GB/s is ~15 min; allow slow links
FILL_TIMEOUT = "6h"


def apply_manifest(obj: M.Manifest, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """One manifest dict -> the pulumi_kubernetes resource of its kind."""
    # pulumi_kubernetes is not followed by mypy (see pyproject): its classes type as Any.
    return cast(pulumi.CustomResource, _resource_of_kind(obj, opts))


def _resource_of_kind(obj: M.Manifest, opts: pulumi.ResourceOptions) -> Any:
    kind, name = obj["kind"], obj["metadata"]["name"]
    fields: dict[str, Any] = {"metadata": obj["metadata"], "spec": obj.get("spec")}
    rbac = k8s.rbac.v1
    if kind == "Namespace":
        # Server-side apply (pulumi-kubernetes 4's default) makes creating an existing namespace
        # an upsert; retained on destroy, so a namespace that held other things survives.
        return k8s.core.v1.Namespace(
            name,
            metadata=obj["metadata"],
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True)),
        )
    if kind == "PersistentVolumeClaim":
        return k8s.core.v1.PersistentVolumeClaim(name, **fields, opts=opts)
    if kind == "ServiceAccount":
        return k8s.core.v1.ServiceAccount(name, metadata=obj["metadata"], opts=opts)
    if kind in ("ClusterRole", "Role"):
        cls = rbac.ClusterRole if kind == "ClusterRole" else rbac.Role
        return cls(
            f"{name}-{kind.lower()}", metadata=obj["metadata"], rules=obj["rules"], opts=opts
        )
    if kind in ("ClusterRoleBinding", "RoleBinding"):
        cls = rbac.ClusterRoleBinding if kind == "ClusterRoleBinding" else rbac.RoleBinding
        return cls(
            f"{name}-{kind.lower()}",
            metadata=obj["metadata"],
            role_ref=obj["roleRef"],
            subjects=obj["subjects"],
            opts=opts,
        )
    if kind == "DaemonSet":
        return k8s.apps.v1.DaemonSet(name, **fields, opts=opts)
    if kind == "Deployment":
        return k8s.apps.v1.Deployment(name, **fields, opts=opts)
    if kind == "Service":
        return k8s.core.v1.Service(name, **fields, opts=opts)
    if kind == "Job":  # pulumi-kubernetes awaits a Job's completion before dependants
        return k8s.batch.v1.Job(name, **fields, opts=opts)
    if kind == "PodDisruptionBudget":
        return k8s.policy.v1.PodDisruptionBudget(name, **fields, opts=opts)
    if kind == "Secret":
        return k8s.core.v1.Secret(
            name,
            metadata=obj["metadata"],
            type=obj["type"],
            string_data=obj["stringData"],
            opts=opts,
        )
    if obj["apiVersion"] == M.LWS_API and kind == "LeaderWorkerSet":
        return k8s.apiextensions.CustomResource(
            name, api_version=M.LWS_API, kind=kind, **fields, opts=opts
        )
    raise ValueError(f"no Pulumi resource for {obj['apiVersion']} {kind}")  # a bug


class VllmService(pulumi.ComponentResource):
    """vLLM serving the plan: a Deployment (one node) or a LeaderWorkerSet (several)."""

    def __init__(
        self,
        name: str,
        spec: DeploySpec,
        api_key: pulumi.Input[str],
        hf_token: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
        after: list[Any] | None = None,
    ) -> None:
        """``after``: resources every child waits for (the node pool, the weights bucket and
        its IAM): a component's own depends_on does not reach the children it registers."""
        super().__init__("prov:k8s:VllmService", name, None, opts)
        first: list[pulumi.Resource] = []
        if spec.namespace != "default":
            first.append(apply_manifest(M.namespace(spec), pulumi.ResourceOptions(parent=self)))
        data: dict[str, Any] = {"VLLM_API_KEY": pulumi.Output.secret(api_key)}
        if hf_token is not None:
            data["HF_TOKEN"] = pulumi.Output.secret(hf_token)
        # everything below depends on the Secret, so waits for ``after`` too
        self.secret = apply_manifest(
            M.secret(spec, data),
            pulumi.ResourceOptions(parent=self, depends_on=[*first, *(after or [])]),
        )
        # the claim, the pre-pull DaemonSet, then --fill-weights' Job, which fills the bucket
        # or the claim first (Pulumi awaits a Job's completion, and each waits for the ones
        # before it)
        from stacks.prepull import before_workload

        fill_timeouts = pulumi.CustomTimeouts(create=FILL_TIMEOUT, update=FILL_TIMEOUT)
        self.fill: list[pulumi.Resource] = []
        for obj in before_workload(spec):
            self.fill.append(
                apply_manifest(
                    obj,
                    pulumi.ResourceOptions(
                        parent=self,
                        depends_on=[self.secret, *self.fill],
                        custom_timeouts=fill_timeouts,
                    ),
                )
            )
        wait = f"{spec.startup_budget_seconds + _AWAIT_MARGIN_SECONDS}s"
        timeouts = pulumi.CustomTimeouts(create=wait, update=wait)
        self.resources = [
            apply_manifest(
                obj,
                pulumi.ResourceOptions(
                    parent=self, depends_on=[self.secret, *self.fill], custom_timeouts=timeouts
                ),
            )
            for obj in M.build_manifests(spec)
        ]
        self.workload = self.resources[0]
        self.service = self.resources[1]
        self.endpoint: pulumi.Output[str] = (
            _public_endpoint(self.service)
            if spec.public
            else pulumi.Output.from_input(M.cluster_endpoint(spec))
        )
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "workload": f"{M.workload(spec)['kind']}/{spec.name}",
                "service": M.service_name(spec),
                "namespace": spec.namespace,
            }
        )


def _public_endpoint(service: pulumi.CustomResource) -> pulumi.Output[str]:
    """The load balancer's address once the cloud has assigned one."""

    def url(status: Any) -> str:
        ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
        first = ingress[0] if ingress else None
        host = getattr(first, "hostname", None) or getattr(first, "ip", None)
        return f"http://{host}:{PORT}/v1" if host else "pending (no load balancer address yet)"

    status: pulumi.Output[Any] = getattr(service, "status")  # noqa: B009
    return status.apply(url)
