"""Run the stacks/ program through Pulumi's Automation API: deploy, destroy, status.

No Pulumi account: stack state lives in a local file backend under the user's state directory
(platformdirs), and stack secrets (the vLLM API key, the HF token) are encrypted with a
passphrase: $PULUMI_CONFIG_PASSPHRASE(_FILE) when set, otherwise one generated on first use
and kept next to the state (mode 0600). The Automation API drives the `pulumi` CLI, which is
not a Python package: without it every command here exits 1 with how to install it.

Imported only by the deploy commands (pulumi and the stacks are imported inside functions).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from provisioner.contract.document import PlanDocument
from provisioner.errors import OperationalError, UsageError
from provisioner.fileio import write_atomic
from stacks.options import DeployOptions
from stacks.spec import DeploySpec

PROJECT = "prov"
INSTALL_HINT = (
    "the Pulumi CLI is not installed (prov deploy drives it through Pulumi's Automation API): "
    "install it with 'curl -fsSL https://get.pulumi.com | sh' (or 'brew install pulumi') and "
    "rerun; 'prov deploy --plan FILE --render DIR' writes the manifests without Pulumi"
)
_PASSPHRASE_ENV = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")
#: removed when a new deploy omits them (DeployOptions.to_config writes them only when set)
_OPTIONAL_KEYS = tuple(
    f"prov:{k}"
    for k in (
        "name", "kubeContext", "weights", "weightsBucket", "fillWeights", "keepWeightsBucket",
        "weightsPvc", "weightsStorageClass", "weightsPvcGbps", "prepull", "compileCache",
    )
)  # fmt: skip

Echo = Callable[[str], Any]


def state_dir() -> Path:
    """Where the file backend, the workspace and the generated passphrase live."""
    import platformdirs

    return Path(platformdirs.user_state_dir("prov")) / "pulumi"


def find_pulumi() -> Path | None:
    """The pulumi CLI on PATH, or where get.pulumi.com installs it (~/.pulumi/bin)."""
    found = shutil.which("pulumi")
    if found:
        return Path(found)
    home = Path.home() / ".pulumi" / "bin" / "pulumi"
    return home if home.is_file() and os.access(home, os.X_OK) else None


def _passphrase_env(root: Path) -> dict[str, str]:
    if any(os.environ.get(k) is not None for k in _PASSPHRASE_ENV):
        return {}  # the user's own passphrase: the CLI reads it from the environment
    path = root / "passphrase"
    if not path.exists():
        write_atomic(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    return {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path)}


@dataclass
class _Session:
    auto: Any  # the pulumi.automation module
    options: Any  # its LocalWorkspaceOptions


@contextmanager
def _session() -> Iterator[_Session]:
    """The Automation API set up for prov's local backend; CLI failures become ProvErrors."""
    try:
        from pulumi import automation as auto
    except ImportError:
        raise OperationalError(
            "prov deploy needs the deploy extra: pip install 'prov[deploy]'"
        ) from None
    cli = find_pulumi()
    if cli is None:
        raise OperationalError(INSTALL_HINT)
    root = state_dir()
    try:
        (root / "backend").mkdir(parents=True, exist_ok=True)
        (root / "work").mkdir(parents=True, exist_ok=True)
        env = {"PULUMI_SKIP_UPDATE_CHECK": "true", **_passphrase_env(root)}
    except OSError as e:
        raise OperationalError(f"cannot prepare {root}: {e.strerror or e}") from None
    root_dir = str(cli.parent.parent) if cli.parent.name == "bin" else None
    try:  # runs `pulumi version` and checks it against the SDK
        command = auto.PulumiCommand(root=root_dir)
    except auto.InvalidVersionError as e:
        raise OperationalError(f"the Pulumi CLI at {cli} does not suit this SDK: {e}") from None
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        raise OperationalError(f"cannot run the Pulumi CLI at {cli}: {e}") from None
    options = auto.LocalWorkspaceOptions(
        work_dir=str(root / "work"),
        project_settings=auto.ProjectSettings(
            name=PROJECT,
            runtime="python",
            backend=auto.ProjectBackend(url=(root / "backend").as_uri()),
        ),
        secrets_provider="passphrase",
        env_vars=env,
        pulumi_command=command,
    )
    try:
        yield _Session(auto, options)
    except auto.StackNotFoundError:
        raise  # callers turn it into a UsageError naming the stack
    except auto.ConcurrentUpdateError:
        raise OperationalError(
            "another prov/pulumi command is updating this stack; wait for it (or, if it died, "
            f"remove the lock under {root / 'backend'})"
        ) from None
    except auto.CommandError as e:
        raise OperationalError(f"pulumi failed: {_last_error_line(str(e))}") from None


def _last_error_line(text: str) -> str:
    """The most telling line of a failed pulumi command (its whole output was streamed)."""
    # str(CommandError) is "code: N / stdout: ... / stderr: ..."; drop those labels.
    lines = [re.sub(r"^(code|stdout|stderr):\s*", "", ln.strip()) for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    for marker in ("error:", "Error:"):
        hits = [ln for ln in lines if marker in ln]
        if hits:
            return hits[-1]
    return lines[-1] if lines else "no output"


def _install_plugins(stack: Any, target: str) -> None:
    """The provider plugins matching the installed SDKs (a no-op when already present)."""
    packages = {"kubernetes": "pulumi_kubernetes"}
    if target == "aws-eks":
        packages["aws"] = "pulumi_aws"
    for plugin, package in packages.items():
        stack.workspace.install_plugin(plugin, f"v{metadata.version(package)}")


def _program() -> Any:
    from stacks.program import program

    return program


def deploy(
    doc: PlanDocument,
    options: DeployOptions,
    spec: DeploySpec,
    stack_name: str,
    *,
    preview_only: bool,
    yes: bool,
    confirm: Callable[[], bool],
    echo: Echo,
) -> dict[str, Any] | None:
    """Preview, and unless preview_only, bring the stack up; returns its outputs (or None)."""
    from stacks.spec import plan_config

    with _session() as s:
        auto = s.auto
        stack = auto.create_or_select_stack(
            stack_name=stack_name, project_name=PROJECT, program=_program(), opts=s.options
        )
        _install_plugins(stack, spec.target)
        config = {k: auto.ConfigValue(v) for k, v in options.to_config().items()}
        config["prov:plan"] = auto.ConfigValue(plan_config(doc, options.rank))
        if spec.target == "aws-eks":
            config["aws:region"] = auto.ConfigValue(spec.plan.region)
        existing = stack.get_all_config()
        api_key = os.environ.get("VLLM_API_KEY")
        if api_key or "prov:apiKey" not in existing:
            # A new stack without VLLM_API_KEY gets a random key; later deploys keep it.
            config["prov:apiKey"] = auto.ConfigValue(
                api_key or secrets.token_urlsafe(32), secret=True
            )
        if os.environ.get("HF_TOKEN"):
            config["prov:hfToken"] = auto.ConfigValue(os.environ["HF_TOKEN"], secret=True)
        stale = [k for k in _OPTIONAL_KEYS if k in existing and k not in config]
        if stale:
            stack.remove_all_config(stale)
        stack.set_all_config(config)
        if preview_only or not yes:
            echo(f"Previewing stack {stack_name} ({spec.target}) ...")
            stack.preview(on_output=echo)
            if preview_only or not confirm():
                return None
        echo(f"Deploying stack {stack_name} ...")
        result = stack.up(on_output=echo)
        return {k: ("[secret]" if v.secret else v.value) for k, v in result.outputs.items()}


def _select(s: _Session, stack_name: str) -> Any:
    try:
        return s.auto.select_stack(
            stack_name=stack_name, project_name=PROJECT, program=_program(), opts=s.options
        )
    except s.auto.StackNotFoundError:
        raise UsageError(f"--stack {stack_name}: no such stack; 'prov status' lists them") from None


def stack_region(stack_name: str) -> str | None:
    """The AWS region of an aws-eks stack (its aws:region config), None for other targets."""
    with _session() as s:
        value = _select(s, stack_name).get_all_config().get("aws:region")
        return str(value.value) if value is not None and value.value else None


def destroy(stack_name: str, *, echo: Echo) -> None:
    """Delete every resource of the stack, then the stack and its config."""
    with _session() as s:
        stack = _select(s, stack_name)
        echo(f"Destroying stack {stack_name} ...")
        stack.destroy(on_output=echo)
        stack.workspace.remove_stack(stack_name)


def status(stack_name: str | None, *, show_secrets: bool) -> list[dict[str, Any]] | dict[str, Any]:
    """Every stack of the local backend, or one stack's outputs."""
    with _session() as s:
        if stack_name is None:
            o = s.options
            workspace = s.auto.LocalWorkspace(
                work_dir=o.work_dir,
                env_vars=o.env_vars,
                secrets_provider=o.secrets_provider,
                project_settings=o.project_settings,
                pulumi_command=o.pulumi_command,
            )
            return [
                {
                    "stack": st.name,
                    "last_update": st.last_update.isoformat() if st.last_update else None,
                    "update_in_progress": bool(st.update_in_progress),
                    "resources": st.resource_count,
                }
                for st in workspace.list_stacks()
            ]
        stack = _select(s, stack_name)
        return {
            k: (v.value if show_secrets or not v.secret else "[secret]")
            for k, v in stack.outputs().items()
        }
