"""The one CLI boundary's rules: errors become one line and an exit code, never a traceback.

Bad input (ProvError with exit_code 2, or click's own usage errors) exits 2 with one line;
operational failures exit 1; tracebacks only with --debug. Every command module wraps its
command in `boundary`; provisioner/cli/main.py builds the app and registers the commands.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from provisioner.errors import ProvError


class OneLineErrors(TyperGroup):
    """Click's usage errors (a missing value, an unknown option) as one 'prov: error:' line,
    like every other error, instead of typer's framed panel."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.get("standalone_mode", True)
        kwargs["standalone_mode"] = False
        if not standalone:
            return super().main(*args, **kwargs)
        try:
            rv = super().main(*args, **kwargs)
        except Exception as e:  # click's own classes (typer may vendor click): by shape
            name = type(e).__name__
            ctx = getattr(e, "ctx", None)
            if name == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help())
                sys.exit(0)
            if hasattr(e, "format_message") and hasattr(e, "exit_code"):
                _err(_usage_line(e))
                sys.exit(e.exit_code)
            if name == "Abort":
                _err("aborted")
                sys.exit(1)
            raise
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_line(e: Any) -> str:
    ctx = getattr(e, "ctx", None)
    if getattr(e, "option_name", None) == "--debug" and ctx is not None and ctx.parent:
        # a global option given after the command: say where it goes (README: prov --debug ...)
        names: list[str] = []
        while ctx.parent is not None:
            names.insert(0, str(ctx.info_name))
            ctx = ctx.parent
        return f"--debug goes before the command: prov --debug {' '.join(names)} ..."
    msg = " ".join(e.format_message().split())
    return f"{msg} (see '{ctx.command_path} --help')" if ctx is not None else msg


state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


def _err(msg: str) -> None:
    """One line in pipes and logs (grep-able); wrapped to the width on a terminal."""
    text = f"prov: error: {msg}"
    if sys.stderr.isatty():
        from provisioner.cli.textable import terminal_width, wrap

        text = "\n".join(wrap(text, terminal_width()))
    sys.stderr.write(f"{text}\n")


def _output_failed(e: OSError) -> bool:
    """Writing stdout failed (a full disk, a quota): an I/O failure, not a bug."""
    import errno

    lost = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
    return e.filename is None and e.errno in lost


def boundary(fn: F) -> F:
    """Turn ProvError into a one-line message and its exit code (traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProvError as e:
            if state["debug"]:
                raise
            _err(str(e))
            raise typer.Exit(e.exit_code) from None
        except typer.Exit:
            raise
        except BrokenPipeError:  # `prov ... | head`: the reader left; not an error
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as e:  # a bug: say so briefly unless --debug
            if state["debug"]:
                raise
            # stdout lost: exit 1 like an OperationalError; quiet the exit-time flush
            if isinstance(e, OSError) and _output_failed(e):
                import os

                _err(f"cannot write the output: {e.strerror}")
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(1) from None
            _err(f"internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def warn(msg: str, width: int | None = None) -> None:
    """A 'prov: warning:' on stderr, wrapped to the terminal (continuation lines indented)."""
    from provisioner.cli.textable import terminal_width, wrap

    lines = wrap(f"prov: warning: {msg}", width or terminal_width())
    sys.stderr.write("".join(f"{line}\n" for line in lines))


def split_values(values: list[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated values: --cloud aws,gcp --cloud nebius."""
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return tuple(out)


def raise_usage(msg: str) -> None:
    from provisioner.errors import UsageError

    raise UsageError(msg)
