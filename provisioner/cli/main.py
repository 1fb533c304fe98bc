"""`prov`: the app, its root options, and the command groups registered on it.

Each command group lives in its own module (quote, fit, models, prices, deploy, daemon) and
registers itself here; none imports this module back. SDK-heavy commands import their adapters
inside the command so `prov quote` stays fast.
"""

from __future__ import annotations

import typer

from provisioner import __version__
from provisioner.cli import daemon, deploy, fit, models, prices, quote
from provisioner.cli.boundary import OneLineErrors, state

app = typer.Typer(
    cls=OneLineErrors,
    name="prov",
    help="Cheapest cloud GPU shape that really runs a large LLM under vLLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain click help: rich's boxed tables cut long option names ("--weights-storage…") at
    # 80 columns; click's layout wraps the text and keeps every name whole
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prov {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    state["debug"] = debug


for _group in (quote, models, deploy, daemon, prices, fit):
    _group.register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
