"""`prov deploy`, `prov destroy`, `prov status`: registered on the main app by provisioner.cli.main.

Module level imports typer, the standard library and deploy_storage (the storage flags) only,
so `prov quote` does not pay for pydantic models, pricing data, Pulumi or PyYAML; each command
imports what it needs.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from provisioner.cli.deploy_storage import StorageFlags, hub_fallback_warning, with_storage_flags

_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def _usage(msg: str) -> None:
    from provisioner.errors import UsageError

    raise UsageError(msg)


def _interactive() -> bool:
    return sys.stdin.isatty()


def _confirm(question: str) -> bool:
    try:
        return typer.confirm(question, default=False)
    except (typer.Abort, EOFError):
        return False


def _print_outputs(outputs: dict[str, Any]) -> None:
    for key in sorted(outputs, key=lambda k: (k != "endpoint", k)):
        value = outputs[key]
        shown = value if isinstance(value, str) else json.dumps(value)
        typer.echo(f"  {key}: {shown}")


def best_deployable(doc: Any, target: str) -> tuple[int, str]:
    """The best-ranked plan `prov deploy --target TARGET` can run, and a line saying so."""
    from provisioner.contract.check import deploy_facts
    from provisioner.core.deployable import not_deployable_reason
    from provisioner.core.offer import estimated_by
    from provisioner.errors import UsageError
    from stacks.spec import deployable_hint

    if not doc.plans:
        raise UsageError("the plan file has no plans (nothing fit); quote again with other limits")
    passed: list[str] = []
    # an estimated price is not picked while an observed one deploys (the headline's rule)
    est = {p.rank for p in doc.plans if estimated_by(p.price_flags, p.market)}
    for p in sorted(doc.plans, key=lambda p: (p.rank in est, p.rank)):
        reason = not_deployable_reason(deploy_facts(doc, p), target)
        if reason is None:
            notes = [f"rank {', '.join(passed)} cannot be deployed"] if passed else []
            if below := [str(r) for r in sorted(est) if r < p.rank and str(r) not in passed]:
                notes.append(f"rank {', '.join(below)}: price an estimate")
            skipped = f" ({'; '.join(notes)})" if notes else ""
            return p.rank, f"using rank {p.rank}, the best plan prov deploy can run{skipped}"
        passed.append(str(p.rank))
    first = doc.plans[0]
    why = not_deployable_reason(deploy_facts(doc, first), target)
    raise UsageError(
        f"no plan in the file can be deployed (rank {first.rank}: {why}); "
        f"{deployable_hint(doc, target)}"
    )


def _leftovers(stack: str, region: str | None) -> tuple[list[Any], Any]:
    """The stack's instances outside Pulumi (listed on stdout) and the cleanup that ends them."""
    if region is None:
        typer.echo(f"Stack {stack} has no AWS region (kubeconfig target): no instances to end.")
        return [], None
    from provisioner.aws_credentials import require_credentials
    from stacks import leftovers
    from stacks.leftovers_aws import Ec2Cleanup

    session = require_credentials(
        f"prov destroy terminates stack {stack}'s instances in {region}, then its resources",
        region=region,
    )
    cleanup = Ec2Cleanup(region, session)
    found = cleanup.find(stack)
    if not found:
        typer.echo(f"No instances tagged with stack {stack} in {region}.")
        return [], cleanup
    typer.echo(f"Instances tagged with stack {stack} in {region} (terminated first):")
    for line in leftovers.lines(found):
        typer.echo(line)
    return found, cleanup


def _pick(plan: Path, rank: int | None, target: str) -> tuple[Any, int, bool]:
    """The plan document, the rank to deploy (said when deploy picks it), and whether that
    plan goes to aws-eks."""
    from provisioner.contract.document import load_plan_document
    from stacks.spec import resolve_target, select_plan

    if rank is not None and rank < 1:
        _usage(f"--rank {rank}: ranks start at 1")
    doc = load_plan_document(plan).with_headline_plans()  # the headline's picks deploy too
    if rank is None:
        rank, note = best_deployable(doc, target)
        from provisioner.cli.textable import terminal_width, wrap

        for line in wrap(
            note[:1].upper() + note[1:] + " (--rank N picks another).", terminal_width()
        ):
            typer.echo(line)
    return doc, rank, resolve_target(target, select_plan(doc, rank)) == "aws-eks"


def _summary(p: Any) -> str:
    """The plan deploy runs: its layout named as quote's table names it, and the context vLLM
    is started with (the plan's --max-model-len, which is the quote's --ctx)."""
    from provisioner.core.layouts import Layout, layout_label

    label = layout_label(Layout(p.tp, p.dp, p.pp, p.ep), p.dcp)
    args = list(p.vllm_args)
    flag = "--max-model-len"
    ctx = args[args.index(flag) + 1] if flag in args[:-1] else "vLLM's default"
    ctx = f"{int(ctx):,}" if ctx.isdigit() else ctx
    return (
        f"rank {p.rank}: {p.nodes} x {p.instance_type} ({p.gpus_per_node} x {p.gpu}), "
        f"{label}, ctx {ctx}, {p.market}, {p.cloud} {p.region}, ${p.usd_per_hour:.2f}/h"
    )


def _render(directory: Path, spec: Any, force: bool) -> None:
    """--render: the manifests as YAML files; no Pulumi."""
    from stacks.manifests import build_manifests
    from stacks.prepull import before_workload
    from stacks.render import write_render

    path = write_render(directory, spec, force=force)
    made = [*before_workload(spec), *build_manifests(spec)]
    kinds = ", ".join(m["kind"] for m in made)
    from provisioner.cli.textable import terminal_width, wrap

    for line in wrap(f"Wrote {path} ({kinds}) for {_summary(spec.plan)}", terminal_width()):
        typer.echo(line)


def _apply(doc: Any, options: Any, spec: Any, stack: str, preview: bool, yes: bool) -> None:
    """Run the Pulumi stack (after a confirmation unless --yes), then print its outputs."""
    if not _STACK_NAME.match(stack):
        _usage(f"--stack {stack!r}: use letters, digits, '-', '_' or '.'")
    if not (preview or yes or _interactive()):
        _usage("deploying needs a confirmation: pass --yes (or --preview to only look)")
    from provisioner.cli.textable import terminal_width, wrap
    from stacks import automation as runner

    for line in wrap(
        f"Plan {_summary(spec.plan)}; target {spec.target}, stack {stack}", terminal_width()
    ):
        typer.echo(line)
    if spec.target == "aws-eks":  # Pulumi's AWS provider needs them, for a preview too
        from provisioner.aws_credentials import require_credentials

        require_credentials(
            f"prov deploy creates the stack's VPC, EKS cluster and GPU nodes in {spec.plan.region}",
            region=spec.plan.region,
        )
    outputs = runner.deploy(
        doc,
        options,
        spec,
        stack,
        preview_only=preview,
        yes=yes,
        confirm=lambda: _confirm(f"Deploy stack {stack}?"),
        echo=typer.echo,
    )
    if outputs is None:
        typer.echo("Nothing deployed." if not preview else "Preview only: nothing deployed.")
        return
    typer.echo(f"Stack {stack} is up:")
    _print_outputs(outputs)


def register(app: typer.Typer) -> None:
    """Add deploy, destroy and status to `app`, behind the CLI boundary."""
    from provisioner.cli.boundary import boundary

    def deploy(
        plan: Path = typer.Option(..., "--plan", help="A plan file from 'prov quote --json'."),
        rank: int | None = typer.Option(
            None,
            "--rank",
            help="Which plan of the file to deploy (default: the best one prov deploy can run).",
        ),
        target: str = typer.Option(
            "auto",
            "--target",
            help="aws-eks (VPC, EKS, GPU pool, queue) or kubeconfig (your current cluster); "
            "auto: aws-eks for an AWS plan.",
        ),
        stack: str | None = typer.Option(
            None, "--stack", help="Pulumi stack name (default: the release name)."
        ),
        name: str | None = typer.Option(
            None, "--name", help="Release name (default: from the model id)."
        ),
        namespace: str = typer.Option("default", "--namespace", help="Kubernetes namespace."),
        public: bool = typer.Option(
            False, "--public", help="Expose the API through a public load balancer."
        ),
        drain_seconds: int = typer.Option(
            90,
            "--drain-seconds",
            help="vLLM --shutdown-timeout: how long in-flight requests may run on shutdown.",
        ),
        image: str | None = typer.Option(
            None, "--image", help="vLLM image (default: the pinned vllm/vllm-openai tag)."
        ),
        kube_context: str | None = typer.Option(
            None, "--kube-context", help="kubeconfig context (kubeconfig target)."
        ),
        daemon: str = typer.Option(
            "queue",
            "--daemon",
            help="aws-eks: the spot interruption daemon the stack deploys: queue (a "
            "leader-elected Deployment fed by EventBridge), imds (a DaemonSet on the GPU "
            "nodes) or none. See docs/daemon.md.",
        ),
        daemon_image: str | None = typer.Option(
            None, "--daemon-image", help="The daemon's image (build docker/daemon.Dockerfile)."
        ),
        # here: the storage flags (--weights ... --compile-cache), from deploy_storage
        render: Path | None = typer.Option(
            None, "--render", help="Write the Kubernetes manifests as YAML into DIR; no Pulumi."
        ),
        force: bool = typer.Option(
            False, "--force", help="With --render: overwrite a file prov did not write."
        ),
        preview: bool = typer.Option(
            False, "--preview", help="Show what would change, change nothing."
        ),
        yes: bool = typer.Option(False, "--yes", "-y", help="Deploy without asking."),
        **storage: Any,
    ) -> None:
        """Deploy a plan as vLLM with its TP x PP, on EKS or any Kubernetes cluster."""
        from stacks.options import DAEMON_IMAGE, VLLM_IMAGE, DeployOptions
        from stacks.spec import build_spec

        if render is not None and (preview or yes):
            _usage("--render writes files only; it does not combine with --preview or --yes")
        if force and render is None:
            _usage("--force applies to --render only")
        doc, rank, eks = _pick(plan, rank, target)
        flags = StorageFlags(**storage)
        fallback = flags.falls_back_to_hub(doc.request.weights, render is not None, eks)
        if fallback:
            flags = replace(flags, weights="hub")
        options = DeployOptions(
            rank=rank,
            target=target,
            name=name,
            namespace=namespace,
            public=public,
            drain_seconds=drain_seconds,
            image=image if image is not None else VLLM_IMAGE,
            kube_context=kube_context,
            daemon=daemon,
            daemon_image=daemon_image or DAEMON_IMAGE,
            **flags.as_options(),
        )
        spec = build_spec(doc, options)
        from provisioner.core.catalog import is_local_model

        if spec.weights == "hub" and is_local_model(doc.request.model):
            _usage(
                f"the plan's model was given as a local path ({doc.request.model}): vLLM cannot "
                "download it from the Hugging Face Hub; upload the folder and pass --weights s3 "
                "--weights-bucket s3://BUCKET[/PREFIX], or --weights pvc --weights-pvc NAME"
            )
        if render is not None and spec.weights == "s3" and spec.weights_bucket is None:
            _usage(
                "--render cannot name the bucket the aws-eks stack creates (its name carries your "
                "AWS account id): pass --weights-bucket s3://BUCKET[/PREFIX], or deploy"
            )
        from provisioner.cli.boundary import warn

        if fallback:
            warn(hub_fallback_warning(eks, render is not None))
        if spec.weights == "s3" and spec.weights_bucket and spec.plan.cloud != "aws":
            warn(
                f"the plan runs on {spec.plan.cloud} and streams its weights from "
                f"s3://{spec.weights_bucket}: that crosses clouds (egress charges, AWS credentials "
                "in the pod), and the plan's time to serve assumes an in-region bucket"
            )
        if kube_context and spec.target != "kubeconfig":
            _usage("--kube-context applies to --target kubeconfig only")
        from provisioner.contract.check import check_plan

        unchecked = check_plan(doc, spec.plan)
        for note in ([unchecked] if unchecked else []) + list(spec.warnings):
            warn(note)
        if render is not None:
            _render(render, spec, force)
        else:
            _apply(doc, options, spec, stack or spec.name, preview, yes)

    app.command()(boundary(with_storage_flags(deploy, after="daemon_image")))

    @app.command()
    @boundary
    def destroy(
        stack: str = typer.Option(..., "--stack", help="The stack to delete (see prov status)."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Destroy without asking."),
        preview: bool = typer.Option(
            False,
            "--preview",
            help="Only list the stack's instances that would be terminated; destroy nothing.",
        ),
        wait_seconds: int = typer.Option(
            600,
            "--wait-seconds",
            min=1,
            help="How long to wait for those instances to shut down before giving up.",
        ),
    ) -> None:
        """Delete every resource of a stack deployed by prov deploy, then the stack.

        First the stack's EC2 instances (tag prov.dev/stack) are terminated:
        the replacements and spares prov daemon launched are not Pulumi's.
        docs/deploy.md lists the IAM permissions this needs."""
        if not _STACK_NAME.match(stack):
            _usage(f"--stack {stack!r}: use letters, digits, '-', '_' or '.'")
        if not (preview or yes or _interactive()):
            _usage("destroying needs a confirmation: pass --yes (or --preview to only look)")
        from stacks import automation as runner

        region = runner.stack_region(stack)
        found, cleanup = _leftovers(stack, region)
        if preview:
            typer.echo("Preview only: nothing destroyed.")
            return
        question = f"Destroy every resource of stack {stack}"
        if found:
            question += f" and terminate the {len(found)} instance(s) above"
        if not yes and not _confirm(question + "?"):
            typer.echo("Nothing destroyed.")
            return
        if cleanup is not None and found:
            n = cleanup.terminate(
                found, lambda m: typer.echo(m, err=True), timeout_s=float(wait_seconds)
            )
            typer.echo(f"Terminated {n} instance(s) of stack {stack} in {region}.")
        runner.destroy(stack, echo=typer.echo)
        typer.echo(f"Stack {stack} destroyed and removed.")

    @app.command()
    @boundary
    def status(
        stack: str | None = typer.Option(None, "--stack", help="Show this stack's outputs."),
        show_secrets: bool = typer.Option(
            False, "--show-secrets", help="Print secret outputs (the API key) in clear."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """The stacks prov deployed (local backend), or one stack's outputs."""
        if stack is not None and not _STACK_NAME.match(stack):
            _usage(f"--stack {stack!r}: use letters, digits, '-', '_' or '.'")
        from stacks import automation as runner

        result = runner.status(stack, show_secrets=show_secrets)
        if as_json:
            typer.echo(json.dumps(result, indent=2, default=str))
        elif isinstance(result, dict):
            _print_outputs(result)
        elif not result:
            typer.echo("No stacks yet: prov deploy --plan plan.json")
        else:
            for row in result:
                typer.echo(
                    f"{row['stack']}  last update {row['last_update'] or 'never'}  "
                    f"{row['resources'] if row['resources'] is not None else '?'} resources"
                    + ("  (update in progress)" if row["update_in_progress"] else "")
                )
