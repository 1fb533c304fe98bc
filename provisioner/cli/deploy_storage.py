"""`prov deploy`'s storage flags as one object: where vLLM loads the weights from and what is
kept off the node (compile cache, image pre-pull).

Each ``StorageFlags`` field carries its typer option in its metadata, and
``with_storage_flags`` adds them to the command's signature (the way provisioner/cli/daemon.py
generates its options from DaemonConfig), so the command takes them as one ``**storage`` and
builds the object once. The field names are ``stacks.options.DeployOptions``'s (a test holds
them equal). Module-level imports: typer and the standard library only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

import typer


def _flag(default: Any, names: str, help: str) -> Any:
    return field(default=default, metadata={"option": typer.Option(default, names, help=help)})


@dataclass(frozen=True)
class StorageFlags:
    weights: str | None = _flag(
        None,
        "--weights",
        "Where vLLM loads the weights from: s3 (streamed from a bucket with "
        "--load-format runai_streamer), pvc (a ReadWriteMany claim) or hub (downloaded from "
        "the Hugging Face Hub). Default: the plan's (quote --weights). See docs/deploy.md.",
    )
    weights_bucket: str | None = _flag(
        None,
        "--weights-bucket",
        "s3://BUCKET or s3://BUCKET/PREFIX in the plan's region holding the checkpoint "
        "(--weights s3); PREFIX defaults to the model id. The vLLM nodes get read access "
        "to it only. Without it the aws-eks stack creates a private bucket for the model.",
    )
    keep_weights_bucket: bool | None = _flag(
        None,
        "--keep-weights-bucket/--delete-weights-bucket",
        "The bucket the aws-eks stack creates: keep it (and the weights) on 'prov "
        "destroy', the default, so a redeploy reuses it; or delete it with the stack.",
    )
    weights_pvc: str | None = _flag(
        None,
        "--weights-pvc",
        "--weights pvc: an existing ReadWriteMany PersistentVolumeClaim holding (or, "
        "with --fill-weights, to hold) the checkpoint under /<model id>.",
    )
    weights_storage_class: str | None = _flag(
        None,
        "--weights-storage-class",
        "--weights pvc: create a ReadWriteMany claim <name>-weights with this storage "
        "class (e.g. efs-sc on EKS with the EFS CSI driver).",
    )
    weights_pvc_gbps: float | None = _flag(
        None,
        "--weights-pvc-gbps",
        "--weights pvc: GB/s the volume reads to one node, for the time to serve and "
        "the probe budget (default: 1.05, an EBS gp3 volume's; EFS Elastic: 1.57).",
    )
    fill_weights: bool = _flag(
        False,
        "--fill-weights",
        "--weights s3 or pvc: first run a one-shot Job that fills the bucket or claim "
        "from the Hugging Face Hub (HF token from the deployment's Secret; resumable; "
        "progress in its logs).",
    )
    prepull: bool | None = _flag(
        None,
        "--prepull/--no-prepull",
        "A DaemonSet that pulls the vLLM image onto every GPU node as it joins "
        "(default: on for --weights s3 and pvc).",
    )
    compile_cache: bool | None = _flag(
        None,
        "--compile-cache/--no-compile-cache",
        "Keep vLLM's torch.compile cache in the bucket (cache/ prefix) or the claim, "
        "so a new node skips the cold compile (default: on for --weights s3 and pvc).",
    )

    def as_options(self) -> dict[str, Any]:
        """The fields as ``DeployOptions`` keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def falls_back_to_hub(self, quoted: str, render: bool, eks: bool) -> bool:
        """Quote's default path (``quoted`` s3) needs a bucket: the aws-eks stack creates one;
        elsewhere (and in a render, which cannot name it) without --weights-bucket, deploy the
        path that needs nothing (its probe is sized by the same time-to-serve function)."""
        return (
            self.weights is None
            and self.weights_bucket is None
            and quoted == "s3"
            and (render or not eks)
        )


def hub_fallback_warning(eks: bool, render: bool = False) -> str:
    """What deploy says when it falls back to --weights hub (a render of an aws-eks plan: the
    stack would create the bucket, but a render cannot name it)."""
    verb = "rendering" if render else "deploying"
    if render and eks:
        why = f"a render cannot name the bucket the aws-eks stack creates: {verb}"
    else:
        why = f"no --weights-bucket was given: {verb}"
    return (
        f"the plan was quoted for --weights s3, but {why} --weights hub (slower to replace; "
        "see docs/recovery.md); pass --weights-bucket s3://BUCKET[/PREFIX] to stream from a "
        "bucket"
    )


F = Callable[..., Any]


def with_storage_flags(command: F, after: str) -> F:
    """Give ``command`` (which takes the storage flags as ``**storage``) a signature with the
    flags as options right after its parameter ``after``, in field order; typer reads it."""
    hints = get_type_hints(command) | get_type_hints(StorageFlags)
    params: list[inspect.Parameter] = []
    for p in inspect.signature(command).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name]))
        if p.name == after:
            params += [
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=f.metadata["option"],
                    annotation=hints[f.name],
                )
                for f in fields(StorageFlags)
            ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return command
