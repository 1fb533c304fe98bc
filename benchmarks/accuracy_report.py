"""The report of benchmarks/accuracy.py: error summaries by group, the printed bands (from
out-of-sample errors only) and the markdown tables."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
BAND_FLOOR, BAND_STEP, THIN_ROWS, THIN_BAND, BAND_Q = 0.15, 0.05, 5, 0.5, 0.9
THIN_SOURCES = 2  # one source is one harness and one setup: its spread is not another's
DEFAULT_BAND, OTHER_ENGINE_BAND = 0.6, 0.6
CV = HERE / "accuracy_cv.json"  # calibration runs predicted without their source (--fit)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"n": 0}
    errs = [abs(r["error_pct"]) for r in rows]
    return {
        "n": len(rows),
        "median_abs_error_pct": round(statistics.median(errs), 1),
        "max_ratio": round(max(r["ratio"] for r in rows), 2),
        "in_band_pct": round(100 * sum(r["in_band"] for r in rows) / len(rows)),
    }


def groups(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out["all"].append(r)
        if r["engine"] in {"vllm", "sglang"}:
            out["vLLM + SGLang"].append(r)
        out[f"engine {r['engine']}"].append(r)
        out[f"family {r['family']}"].append(r)
        out[r["moe"]].append(r)
        out[f"metric {r['metric']}"].append(r)
        out[f"regime {r['regime']}"].append(r)
        if r["engine"] in {"vllm", "sglang"}:
            out[f"vLLM + SGLang, {r['era']}"].append(r)
    for r in rows:  # last: where the error concentrates, source by source
        out[f"source {r['source']}"].append(r)
    return {k: summary(v) for k, v in out.items()}


# ---- the bands ------------------------------------------------------------------------------


Cell = tuple[list[float], set[str]]  # |log errors| of a band's cell, and their sources


def _band_cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str], Cell]:
    """The out-of-sample vLLM/SGLang errors per (GPU family, regime), with their sources."""
    cells: dict[tuple[str, str], Cell] = defaultdict(lambda: ([], set()))
    for r in rows:
        if r["engine"] in {"vllm", "sglang"}:
            logs, sources = cells[(r["family"], r["regime"])]
            logs.append(math.log(r["ratio"]))
            sources.add(r["source"])
    return cells


def _band(logs: list[float], sources: int = THIN_SOURCES) -> tuple[float, bool]:
    """BAND_Q quantile of |log error|, rounded up to 5%, >= 15%; thin data (< 5 runs or a single
    source): >= 50%."""
    logs = sorted(logs)
    q = logs[min(len(logs) - 1, math.ceil(BAND_Q * len(logs)) - 1)] if logs else math.inf
    thin = len(logs) < THIN_ROWS or sources < THIN_SOURCES
    rel = max(BAND_FLOOR, math.exp(q) - 1) if logs else DEFAULT_BAND
    if thin:
        rel = max(rel, THIN_BAND)
    return math.ceil(rel / BAND_STEP - 1e-9) * BAND_STEP, thin


def set_bands(data: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The printed band per family and regime: what the OUT-OF-SAMPLE errors support (held-out
    runs, and calibration runs predicted by a fit without their source). Coverage is checked
    leave-one-source-out (loso_in_band)."""
    bands = {k: v for k, v in data["bands"].items() if k.startswith("_")}
    for (fam, regime), (logs, sources) in sorted(_band_cells(rows).items()):
        n_src = len(sources)
        rel, thin = _band(logs, n_src)
        of = f"{n_src} sources" if n_src > 1 else "one source"
        basis = f"{BAND_Q:.0%} of {len(logs)} out-of-sample runs, {of}"  # thin: the "thin" flag
        bands.setdefault(fam, {})[regime] = {"rel": round(rel, 2), "thin": thin, "basis": basis}
    data["bands"] = bands


def loso_in_band(held: list[dict[str, Any]], cal: list[dict[str, Any]]) -> float:
    """Share of held-out runs inside a band derived WITHOUT their own source (honest coverage);
    `cal`: the calibration runs as predicted without their own source (cross_rows)."""
    without = {  # the cells of every band built without one held-out source
        s: _band_cells(cal + [h for h in held if h["source"] != s])
        for s in {h["source"] for h in held}
    }
    inside = 0
    for r in held:
        logs, sources = without[r["source"]].get((r["family"], r["regime"]), ([], set()))
        rel, _ = _band(logs, len(sources))
        if r["engine"] not in {"vllm", "sglang"}:
            rel = max(rel, OTHER_ENGINE_BAND)
        inside += 1 / (1 + rel) <= r["published"] / r["predicted"] <= 1 + rel
    return round(100 * inside / len(held)) if held else 0


# ---- output ----------------------------------------------------------------------------------


def cross_rows(fitted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calibration runs as a fit without their own source predicts them (written by --fit:
    benchmarks/accuracy_cv.json); the fitted rows where that file is missing or stale."""
    if not CV.is_file():
        return fitted
    cross = json.loads(CV.read_text())
    if {r["id"] for r in cross} != {r["id"] for r in fitted}:
        return fitted
    # inside the band the plan prints now (the file's rows were judged by the bands of their fit)
    band = {r["id"]: r["band_pct"] / 100 for r in fitted}
    return [{**r, "in_band": r["ratio"] <= 1 + band[r["id"]] + 1e-9} for r in cross]


def markdown(
    name: str, rows: list[dict[str, Any]], skipped: list[dict[str, Any]], per_run: bool = True
) -> str:
    lines = [
        f"### {name}: by group",
        "",
        "| group | n | median abs error | worst | in band |",
        "|---|---|---|---|---|",
    ]
    for k, s in groups(rows).items():
        if s["n"]:
            lines.append(
                f"| {k} | {s['n']} | {s['median_abs_error_pct']:.1f}% | {s['max_ratio']:.2f}x "
                f"| {s['in_band_pct']}% |"
            )
    if not per_run:
        return "\n".join(lines)
    lines += [
        "",
        f"### {name}: per run",
        "",
        "| ref | source | model | engine | hardware | isl/osl conc | metric | published "
        "| predicted | error | band |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        band = (
            f"±{r['band_pct']}%" + (" thin" if r["thin"] else "") + ("" if r["in_band"] else " OUT")
        )
        lines.append(
            f"| {r['id']} | {r['source']} | {r['model']} | {r['engine']} | {r['hw']} "
            f"| {r['workload']} | {r['metric']} | {r['published']:g} | {r['predicted']:g} "
            f"| {r['error_pct']:+.1f}% | {band} |"
        )
    if skipped:
        lines += ["", f"Not modelled ({len(skipped)}): "]
        lines += [f"- {s['id']}: {s['reason']}" for s in skipped]
    return "\n".join(lines)
