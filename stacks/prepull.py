"""What the stack and `--render` apply before the vLLM workload: the weights claim and the image
pre-pull DaemonSet. One builder for both (stacks/render.py, stacks/vllm_service.py). Pure.

**Pre-pull (``--prepull``, on by default for s3 and pvc).** A DaemonSet on the GPU nodes whose
init container is the pinned vLLM image (it runs ``/bin/true``) and whose one container is the
pause image: the kubelet pulls the image onto every GPU node as soon as the node joins, and keeps
it (image garbage collection spares images of running pods: Kubernetes docs, "Garbage Collection
of Unused Containers and Images"). Chosen over pulling in the launch template's user data:

* it works on both targets (``--target kubeconfig`` has no launch template of prov's) and is one
  manifest in the render and the stack;
* on EKS AL2023 the user data is nodeadm's configuration, run before containerd and the kubelet
  are up; a pull there would delay the node's join by the whole pull (minutes for ~12 GB) and
  race nodeadm; a DaemonSet pulls through the kubelet once the node is Ready, with its
  credentials and its registry mirrors;
* it helps exactly where time to serve is spent: the daemon launches a replacement on the notice
  (or the rebalance recommendation) and drains the old node only once the replacement is Ready
  (docs/daemon.md), so the image is pulled while the old replica still serves. A node and its
  vLLM pod that start together still pull once (containerd pulls an image once per node).

What it cannot do is make the first pull on a brand-new node free: only an image baked into the
AMI or an EBS snapshot does that (AWS containers blog, "Reduce container startup time on Amazon
EKS with Bottlerocket data volume", 2023-10). docs/deploy.md says so.
"""

from __future__ import annotations

from provisioner import fleet
from stacks.manifests import Manifest, common_labels
from stacks.spec import DeploySpec
from stacks.weights_fill import build_fill_manifests
from stacks.weights_path import claim_size_gib

#: The pause image of Kubernetes 1.31+ (kubeadm's default sandbox image; registry.k8s.io):
#: a few hundred KB that sleeps until the pod is deleted.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
_TINY = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}


def prepull_name(spec: DeploySpec) -> str:
    return f"{spec.name}-prepull"


def _labels(spec: DeploySpec) -> dict[str, str]:
    # not the vLLM pods' labels: the Service, the PDB and the daemon must not select these
    return {
        "app.kubernetes.io/name": "vllm-prepull",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/managed-by": "prov",
        fleet.MANAGED: fleet.MANAGED_VALUE,
    }


def prepull_daemonset(spec: DeploySpec) -> Manifest:
    """Pull ``spec.image`` on every GPU node of the pool (aws-eks) or of the cluster."""
    # aws-eks: the stack's pool label; elsewhere NVIDIA's node label (GPU feature discovery /
    # the device plugin chart's affinity), which the stack's GPU nodes carry as well
    selector = (
        {fleet.POOL: spec.name} if spec.target == "aws-eks" else {fleet.NVIDIA_GPU_PRESENT: "true"}
    )
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "nodeSelector": selector,
        "tolerations": [
            {"key": key, "operator": "Exists", "effect": fleet.GPU_TAINT_EFFECT}
            for key in dict.fromkeys((fleet.GPU_TAINT_KEY, spec.gpu_resource))
        ],
        "initContainers": [
            {
                "name": "pull",
                "image": spec.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/true"],
                "resources": _TINY,
            }
        ],
        "containers": [{"name": "pause", "image": PAUSE_IMAGE, "resources": _TINY}],
        "terminationGracePeriodSeconds": 1,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": prepull_name(spec),
            "namespace": spec.namespace,
            "labels": _labels(spec),
        },
        "spec": {
            "selector": {"matchLabels": _labels(spec)},
            "template": {"metadata": {"labels": _labels(spec)}, "spec": pod},
        },
    }


def weights_claim(spec: DeploySpec) -> Manifest:
    """--weights pvc --weights-storage-class: the ReadWriteMany claim prov creates (filled by
    the fill Job, read by every vLLM pod of every node)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": spec.claim_name,
            "namespace": spec.namespace,
            "labels": common_labels(spec),
            # Pulumi would wait for Bound, which a WaitForFirstConsumer class reaches only
            # once a pod mounts the claim (pulumi-kubernetes' documented skipAwait annotation)
            "annotations": {"pulumi.com/skipAwait": "true"},
        },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": spec.storage.storage_class,
            "resources": {"requests": {"storage": f"{claim_size_gib(spec.weight_bytes)}Gi"}},
        },
    }


def before_workload(spec: DeploySpec) -> list[Manifest]:
    """The claim (when prov creates it), the pre-pull DaemonSet, then the fill Job: what must
    exist, in this order, before the vLLM workload (stacks/manifests.build_manifests)."""
    out: list[Manifest] = []
    if spec.weights == "pvc" and spec.storage.storage_class is not None:
        out.append(weights_claim(spec))
    if spec.storage.prepull:
        out.append(prepull_daemonset(spec))
    return [*out, *build_fill_manifests(spec)]
