"""Size of a core install of prov (no extras): the light quote path must stay < 150 MB.

    python benchmarks/install_size.py [--repo PATH] [--extras data] [--json] [--keep]

Creates a throw-away venv, runs `pip install <repo>` in it (a normal, non-editable install,
so prov's own files are counted too), and sums the files under site-packages, leaving out
pip and setuptools (and their helpers), which are tooling rather than part of prov's footprint.
Needs the package index (or a PIP_INDEX_URL / wheel cache); takes about a minute.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

TARGET_MB = 150.0
MB = 1e6  # decimal megabytes, as pip and PyPI report sizes
TOOLING = {"pip", "setuptools", "wheel", "pkg_resources", "_distutils_hack", "distutils"}


def _is_tooling(name: str) -> bool:
    """pip-24.0.dist-info, setuptools/, distutils-precedence.pth, ... (not prov's footprint)."""
    return name.split("-", 1)[0].split(".", 1)[0].lower() in TOOLING


def tree_bytes(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = Path(root, f)
            if not p.is_symlink():
                total += p.lstat().st_size
    return total


def site_packages(env: Path) -> Path:
    found = sorted(env.glob("lib/python3*/site-packages")) or sorted(env.glob("Lib/site-packages"))
    if not found:
        raise SystemExit(f"install_size: no site-packages under {env}")
    return found[0]


def env_python(env: Path) -> Path:
    posix = env / "bin" / "python"
    return posix if posix.exists() else env / "Scripts" / "python.exe"


def measure(repo: Path, extras: str | None, workdir: Path) -> dict[str, Any]:
    env = workdir / "venv"
    t0 = time.perf_counter()
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    target = f"{repo}[{extras}]" if extras else str(repo)
    cmd = [
        str(env_python(env)),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        target,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"install_size: pip install failed ({done.returncode}):\n{tail}")
    elapsed = time.perf_counter() - t0

    sp = site_packages(env)
    sizes: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for entry in sorted(sp.iterdir()):
        size = tree_bytes(entry)
        (skipped if _is_tooling(entry.name) else sizes)[entry.name] = size
    total = sum(sizes.values())
    # group a distribution's package dir with its .dist-info for the breakdown
    groups: dict[str, int] = {}
    for name, size in sizes.items():
        key = name.split("-", 1)[0] if name.endswith(".dist-info") else name.removesuffix(".py")
        key = key.lower().replace("-", "_")
        groups[key] = groups.get(key, 0) + size
    return {
        "repo": str(repo),
        "extras": extras or "",
        "python": sys.version.split()[0],
        "site_packages": str(sp),
        "total_mb": round(total / MB, 2),
        "excluded_tooling_mb": round(sum(skipped.values()) / MB, 2),
        "target_mb": TARGET_MB,
        "within_target": total / MB < TARGET_MB,
        "install_seconds": round(elapsed, 1),
        "largest": [
            {"name": k, "mb": round(v / MB, 2)}
            for k, v in sorted(groups.items(), key=lambda kv: -kv[1])[:12]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--repo", type=Path, default=here, help=f"project to install ({here})")
    ap.add_argument("--extras", help="also install these extras, e.g. data or aws")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--keep", action="store_true", help="keep the venv and print its path")
    ap.add_argument("--check", action="store_true", help="exit 1 when over the target")
    args = ap.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="prov-install-size-"))
    try:
        res = measure(args.repo.resolve(), args.extras, workdir)
    finally:
        if args.keep:
            print(f"venv kept at {workdir / 'venv'}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        what = f"prov[{res['extras']}]" if res["extras"] else "prov (core, no extras)"
        verdict = "ok" if res["within_target"] else "OVER"
        print(f"install size of {what}, Python {res['python']}")
        print(
            f"  site-packages: {res['total_mb']:.1f} MB  (target < {TARGET_MB:.0f} MB: {verdict}; "
            f"pip/setuptools excluded: {res['excluded_tooling_mb']:.1f} MB)"
        )
        print(f"  pip install took {res['install_seconds']:.0f} s; largest:")
        for row in res["largest"]:
            print(f"    {row['name']:<28} {row['mb']:>7.2f} MB")
    return 1 if args.check and not res["within_target"] else 0


if __name__ == "__main__":
    sys.exit(main())
