"""Execute the cost explorer notebook headless and write its figures as PNGs.

    python notebooks/export_figures.py [--out docs/] [--notebook notebooks/cost_explorer.ipynb]

The notebook saves its figures itself when ``PROV_FIGURES_DIR`` is set; this script sets it,
forces matplotlib's Agg backend and runs the notebook with nbclient on a kernel of *this*
interpreter (ipykernel's own spec, whatever kernelspecs happen to be installed elsewhere), so it
works the same from a fresh ``pip install -e '.[all,test]'`` venv and under pytest. The notebook
file itself is not modified: it stays committed without outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "cost_explorer.ipynb"
DEFAULT_OUT = HERE.parent / "docs"
#: The PNGs the notebook writes with the default parameters.
FIGURES = ("memory_per_gpu.png", "cost_vs_context.png", "pareto_128k.png", "models_32k.png")


def _kernel_manager_class() -> type[Any]:
    """An AsyncKernelManager that only knows ipykernel's native spec for sys.executable.

    A stray ``python3`` kernelspec in ~/.local/share/jupyter (or anywhere on JUPYTER_PATH) can
    point at another interpreter without prov installed; with no kernel dirs, jupyter_client
    falls back to ipykernel's built-in spec, whose argv[0] is this interpreter.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ThisInterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self) -> KernelSpecManager:
            return KernelSpecManager(kernel_dirs=[])

    return ThisInterpreterKernelManager


def run_notebook(
    notebook: Path = NOTEBOOK,
    figures_dir: Path | None = None,
    timeout: int = 300,
) -> tuple[Any, float]:
    """Execute `notebook` (without saving it); return the executed copy and the seconds taken.

    With `figures_dir`, the notebook writes its PNGs there. Raises nbclient's
    CellExecutionError (which names the failing cell) if any cell fails.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    env.pop("PROV_FIGURES_DIR", None)
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
        env["PROV_FIGURES_DIR"] = str(figures_dir.resolve())
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        kernel_manager_class=_kernel_manager_class(),
        resources={"metadata": {"path": str(notebook.resolve().parent)}},
    )
    start = time.perf_counter()
    client.execute(env=env)
    return nb, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNGs")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK, help="notebook to execute")
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell")
    args = parser.parse_args(argv)

    from nbclient.exceptions import CellExecutionError

    try:
        _nb, seconds = run_notebook(args.notebook, args.out, args.timeout)
    except CellExecutionError as e:
        print(f"error: {args.notebook} failed:\n{e}", file=sys.stderr)
        return 1
    fresh = time.time() - seconds - 1
    pngs = sorted(p for p in args.out.glob("*.png") if p.stat().st_mtime >= fresh)
    print(f"executed {args.notebook.name} in {seconds:.1f} s")
    for png in pngs:
        print(f"  {png} ({png.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
