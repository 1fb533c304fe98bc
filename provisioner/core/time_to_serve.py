"""Time to serve: how long a replacement replica takes from "launch a node" to "vLLM ready".

Pure core (no SDK, no I/O beyond the packaged table ``data/time_to_serve.json``, whose every
rate carries its source, date and kind: measured, derived or assumption). One sum of terms::

    time to serve = node launch + image pull + weights + engine start + compile + CUDA graphs

* **node launch**: EC2 launch until the GPU node is Ready (an assumption: no figure is published
  for p4/p5/p6). Every figure below was measured or assumed on AWS; other clouds' plans get the
  same figures, labelled as AWS's (no other cloud's launch or object-store rates are in the table).
* **image pull**: the vllm-openai image (12 GB compressed) at a measured pull rate, or 0 when the
  image is baked into the node (the ``s3`` and ``pvc`` paths assume the deploy pre-pulls it).
* **weights**: each node's share (``weight bytes / nodes``: PP splits the layers, nodes load in
  parallel) at the path's rate, capped by the instance's network:

  - ``hub``: Hugging Face Hub download at the rate measured on a p5.48xlarge, capped by the
    internet-gateway share of the NIC, then read from local disk into the GPUs;
  - ``s3``: an in-region bucket streamed by the Run:ai Model Streamer (vLLM ``--load-format
    runai_streamer[_sharded]``) at the rate measured on a p5.48xlarge, capped by the NIC x the
    streamer's measured NIC efficiency;
  - ``pvc``: a pre-filled EBS gp3 volume at its 1,000 MiB/s limit (measured with the streamer).
* **engine start / compile / graphs**: measured on a p5.48xlarge for an MoE (Qwen3-235B-A22B,
  TP8) and a dense model (Llama-3-70B, TP4); compile is cold on ``hub`` (today's stack) and read
  from vLLM's compile cache on ``s3``/``pvc``; CUDA graphs are captured at every start.

:func:`time_to_serve` is the one function the quote, the deploy stack's startup probe, the
daemon's prewarm decision and the spare-replica math call (docs/recovery.md).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from provisioner.errors import DataError, UsageError

WeightsPath = Literal["hub", "s3", "pvc"]
WEIGHTS_PATHS: tuple[WeightsPath, ...] = ("s3", "hub", "pvc")
#: The default weight path: an in-region bucket streamed into the GPUs. Fastest measured path
#: (6.1 GB/s vs 0.69 GB/s from the Hub on the same p5.48xlarge), no Hub rate limits or outage in
#: the recovery path, and any AZ of the region can read it (an EBS volume is bound to one AZ).
DEFAULT_WEIGHTS: WeightsPath = "s3"
#: The startup probe and VLLM_ENGINE_READY_TIMEOUT_S allow this multiple of the modelled
#: in-container time, and never less than vLLM's own 600 s default: no Kimi start-up log is
#: published and a probe that fires kills a start that was only slow.
PROBE_MARGIN = 2.0
PROBE_FLOOR_S = 600


@functools.cache
def table() -> dict[str, Any]:
    """The packaged rate table (rates + network bandwidth), read once."""
    try:
        text = resources.files("provisioner").joinpath("data/time_to_serve.json").read_text()
    except (OSError, TypeError, ValueError):
        text = (Path(__file__).parents[1] / "data" / "time_to_serve.json").read_text("utf-8")
    try:
        data: dict[str, Any] = json.loads(text)
        for key, row in data["rates"].items():
            if not isinstance(row["value"], int | float) or row["value"] < 0:
                raise ValueError(f"{key}: value must be a number >= 0")
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"time_to_serve.json: bad table ({e})") from None
    return data


def rate(key: str) -> float:
    """One value of the table (seconds, GB, GB/s or a fraction; see its 'unit')."""
    return float(table()["rates"][key]["value"])


def source(key: str) -> str:
    """'source (date)' of one value, for --explain and the plan JSON."""
    row = table()["rates"][key]
    return f"{row['source']} ({row['date']}, {row['kind']})"


def network_gbps(cloud: str, instance_type: str) -> float | None:
    """Documented network bandwidth of an instance type, Gbit/s; None where not in the table."""
    value = table()["network_gbps"].get(cloud, {}).get(instance_type)
    return float(value) if value is not None else None


@dataclass(frozen=True)
class Replica:
    """What a replacement replica's time to serve depends on."""

    cloud: str
    instance_type: str
    gpus_per_node: int
    vcpus: float
    nodes: int  # nodes the weights are split over (PP stages); DP/EP nodes each read them all
    weight_bytes: float  # the whole checkpoint as vLLM loads it
    moe: bool


@dataclass(frozen=True)
class Term:
    name: str  # node launch, image pull, weights, engine start, compile, CUDA graphs
    seconds: float
    detail: str  # the arithmetic with its rates
    sources: tuple[str, ...]  # keys of the rate table
    in_container: bool  # counted from the container's start (the startup probe's window)


@dataclass(frozen=True)
class TimeToServe:
    """The modelled time for one replacement replica to serve, term by term."""

    path: WeightsPath
    terms: tuple[Term, ...]

    @property
    def total_s(self) -> float:
        return sum(t.seconds for t in self.terms)

    @property
    def container_s(self) -> float:
        """From the vLLM container's start to ready: what the startup probe must allow."""
        return sum(t.seconds for t in self.terms if t.in_container)

    @property
    def startup_probe_budget_s(self) -> int:
        """Seconds the startup probe (and VLLM_ENGINE_READY_TIMEOUT_S) should allow."""
        return max(PROBE_FLOOR_S, math.ceil(PROBE_MARGIN * self.container_s))

    def downtime_per_reclaim_s(self, notice_s: float) -> float:
        """Capacity lost per reclaim when the replacement is requested at the notice."""
        return downtime_per_reclaim_s(self.total_s, notice_s)

    def prewarm(self, notice_s: float) -> bool:
        """True when a replacement cannot be ready within the notice: start it on the
        rebalance recommendation (the daemon's --prewarm-on-rebalance) or keep a warm spare."""
        return needs_prewarm(self.total_s, notice_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": self.path,
            "total_s": round(self.total_s),
            "container_s": round(self.container_s),
            "startup_probe_budget_s": self.startup_probe_budget_s,
            "terms": [
                {
                    "term": t.name,
                    "seconds": round(t.seconds, 1),
                    "detail": t.detail,
                    "sources": [source(k) for k in t.sources],
                }
                for t in self.terms
            ],
        }


def _weights_term(r: Replica, path: WeightsPath, pvc_gb_per_s: float | None = None) -> list[Term]:
    per_node = r.weight_bytes / max(r.nodes, 1)
    gb = per_node / 1e9
    share = f"{gb:,.1f} GB" + (" per node" if r.nodes > 1 else "")
    nic = network_gbps(r.cloud, r.instance_type)
    eff = rate("nic_efficiency")
    if path == "hub":
        cap = rate("hub_download_gb_per_s")
        keys: tuple[str, ...] = ("hub_download_gb_per_s",)
        why = "Hub, measured"
        if nic is not None:
            # internet-gateway traffic: half the NIC on >= 32 vCPUs (at least 5 Gbit/s), else 5
            igw = max(rate("internet_share_large") * nic, 5.0) if r.vcpus >= 32 else min(nic, 5.0)
            if igw / 8 * eff < cap:
                cap, why = igw / 8 * eff, f"internet share {igw:g} Gbit/s x {eff:g}"
                keys += ("internet_share_large", "nic_efficiency")
        load = rate("local_load_gb_per_s_per_gpu") * r.gpus_per_node
        return [
            Term("weights download", per_node / (cap * 1e9),
                 f"{share} / {cap:.3g} GB/s ({why})", keys, True),
            Term("weights load", per_node / (load * 1e9),
                 f"{share} / ({r.gpus_per_node} x {rate('local_load_gb_per_s_per_gpu'):g} "
                 "GB/s per GPU) from disk", ("local_load_gb_per_s_per_gpu",), True),
        ]  # fmt: skip
    if path == "s3":
        cap, key = rate("s3_stream_gb_per_s"), "s3_stream_gb_per_s"
        why = (
            "S3 streamer, measured"
            if r.cloud == "aws"
            else f"in-region object store on {r.cloud}: AWS S3's measured rate, assumed"
        )
    elif pvc_gb_per_s is not None:  # the deploy's claim, at the rate its storage documents
        cap, key = pvc_gb_per_s, "pvc_gb_per_s"
        why = "the claim's read rate, given"
    else:
        cap, key = rate("pvc_gb_per_s"), "pvc_gb_per_s"
        why = "EBS gp3 limit, measured"
    keys = (key,)
    if nic is None:
        why += "; NIC not in the table"
    elif nic / 8 * eff < cap:
        cap, why = nic / 8 * eff, f"NIC {nic:g} Gbit/s x {eff:g}"
        keys += ("nic_efficiency",)
    detail = f"{share} / {cap:.3g} GB/s ({why})"
    return [Term("weights", per_node / (cap * 1e9), detail, keys, True)]


def time_to_serve(
    replica: Replica,
    path: WeightsPath = DEFAULT_WEIGHTS,
    *,
    prepulled: bool | None = None,
    compile_cache: bool | None = None,
    pvc_gb_per_s: float | None = None,
) -> TimeToServe:
    """The modelled time to serve of a replacement replica on ``path`` (hub, s3 or pvc).

    ``prepulled`` / ``compile_cache``: whether the deploy pre-pulls the image and keeps vLLM's
    compile cache where a new node reads it (None: the path's profile, on for s3 and pvc, off
    for hub). ``pvc_gb_per_s``: the claim's read rate per node when the deploy knows it (None:
    the table's pvc figure)."""
    if path not in WEIGHTS_PATHS:
        raise UsageError(f"unknown --weights {path!r}; allowed: {', '.join(WEIGHTS_PATHS)}")
    kind = "moe" if replica.moe else "dense"
    cold = path == "hub"  # today's stack: image pulled at start, no compile cache
    pull = cold if prepulled is None else not prepulled
    cold_compile = cold if compile_cache is None else not compile_cache
    image = (
        Term("image pull", rate("image_compressed_gb") / rate("image_pull_gb_per_s"),
             f"{rate('image_compressed_gb'):g} GB / {rate('image_pull_gb_per_s') * 1e3:.1f} MB/s "
             "(not pre-pulled)", ("image_compressed_gb", "image_pull_gb_per_s"), False)
        if pull
        else Term("image pull", rate("image_prepulled_s"), "pre-pulled on the node image",
                  ("image_prepulled_s",), False)
    )  # fmt: skip
    compile_key = f"compile_{'cold' if cold_compile else 'cached'}_{kind}_s"
    terms = (
        Term("node launch", rate("node_launch_gpu_s"),
             "EC2 launch to node Ready (assumed)" if replica.cloud == "aws"
             else f"node launch to Ready on {replica.cloud}: the EC2 figure, assumed",
             ("node_launch_gpu_s",), False),
        image,
        *_weights_term(replica, path, pvc_gb_per_s),
        Term("engine start", rate(f"engine_start_{kind}_s"),
             f"workers, profile, KV allocation ({kind})",
             (f"engine_start_{kind}_s",), True),
        Term("compile", rate(compile_key),
             "torch.compile, " + ("no cache" if cold_compile else "compile cache"),
             (compile_key,), True),
        Term("CUDA graphs", rate(f"graphs_{kind}_s"), "captured at every start",
             (f"graphs_{kind}_s",), True),
    )  # fmt: skip
    return TimeToServe(path, terms)


def downtime_per_reclaim_s(total_s: float, notice_s: float) -> float:
    """Seconds of one replica's new-request capacity lost per reclaim when its replacement,
    which takes ``total_s`` to serve, is requested at the notice: what a warm spare saves.

    When the replacement cannot serve within the notice, the daemon takes the replica out of
    the load balancers at the notice (so no stream starts that the reclaim would cut;
    docs/recovery.md), and capacity is lost from the notice until the replacement serves: the
    whole ``total_s``. When it can, the replacement is Ready before the old replica drains and
    nothing is lost. The quote's availability, the stack and the daemon (which gets only the
    plan's number, ``time_to_serve_s``) all call this one rule."""
    return total_s if needs_prewarm(total_s, notice_s) else 0.0


def needs_prewarm(total_s: float, notice_s: float) -> bool:
    """A replacement taking ``total_s`` cannot serve within the notice: start it on the
    rebalance recommendation (the deploy stack's and the daemon's one rule)."""
    return total_s > notice_s


def spot_notice_s(cloud: str) -> float:
    """Seconds of warning before a spot node is reclaimed (AWS: 2 min; others: 30 s, per the
    notice provisioner.core.spot_risk documents for Azure and GCP; 0 where none is published)."""
    if cloud == "aws":
        return rate("spot_notice_aws_s")
    return 30.0 if cloud in ("azure", "gcp") else 0.0
