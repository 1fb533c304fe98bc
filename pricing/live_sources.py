"""Live price sources that need no account: Azure, RunPod, Vast.ai and Oracle (OCI).

Each source turns the cloud's public answer into ``Node`` rows with the snapshot's rules
(GPU names from gpus.csv, ``price_flags``, single-machine marketplaces). Response shapes
follow the public documentation; tests/pricing/fixtures/live/SOURCE.md cites each one.

* Azure Retail Prices API (``https://prices.azure.com/api/retail/prices``): OData
  ``$filter``, pages of ``Items`` joined by ``NextPageLink``. Only ``type == "Consumption"``
  Linux meters in USD per "1 Hour"; a meter name ending in " Spot" is the spot price;
  Windows products, "Low Priority" meters, DevTestConsumption and Reservation are skipped.
* RunPod GraphQL (``https://api.runpod.io/graphql``), ``gpuTypes``: per-GPU secure-cloud
  prices (``securePrice`` on-demand, ``secureSpotPrice`` interruptible) for 1/2/4/8-GPU pods.
* Vast.ai bundles (``https://console.vast.ai/api/v0/bundles/``): one listing per host;
  ``dph_total`` on-demand, ``min_bid`` interruptible.
* OCI price list (``https://apexapps.oracle.com/pls/apex/cetools/api/v1/products/``):
  ``items[].currencyCodeLocalizations[].prices[]`` with ``model == "PAY_AS_YOU_GO"`` per
  "GPU Per Hour"; Oracle prices a GPU the same in every region.
"""

from __future__ import annotations

import re
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pricing.gpu_names import azure_size_gpu
from pricing.http_json import FetchError, endpoint, fetch_json
from pricing.nodes import Node, gpu_memory_gib, price_flags
from pricing.rentable import ANY_REGION
from provisioner.core.hardware import GpuSpec

Fetch = Callable[..., Any]


@dataclass
class SourceResult:
    """What one source produced: nodes, the regions it covered, what it skipped and why."""

    nodes: list[Node]
    regions: list[str]  # covered regions; ["*"] = the whole cloud
    skipped: Counter[str]
    pages: int = 0


def _node(
    cloud: str,
    *,
    region: str,
    zone: str,
    itype: str,
    spec: GpuSpec,
    count: int,
    vcpus: float,
    memory_gib: float,
    ondemand: float | None,
    spot: float | None,
    catalog_mib: float | None = None,
) -> Node:
    flags: set[str] = set()
    node = Node(
        cloud,
        region,
        zone,
        itype,
        spec.name,
        count,
        gpu_memory_gib(spec, catalog_mib, flags),
        vcpus,
        memory_gib,
        ondemand,
        spot,
        flags,
    )
    price_flags(cloud, node)  # a live row is dated by its fetch: no date flags
    return node


def _price(value: Any) -> float | None:
    """A finite, positive price or None (0, negative, NaN, inf and non-numbers are no price)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if 0 < value < 1e6 else None


# --------------------------------------------------------------------------------------------
# Azure Retail Prices API
# --------------------------------------------------------------------------------------------

AZURE_URL = "https://prices.azure.com/api/retail/prices"
#: VM sizes whose prices are fetched: the GPU sizes prov maps (the snapshot's Azure rows).
AZURE_MAX_PAGES = 200


def azure_filter(skus: list[str], regions: list[str] | None) -> str:
    sku = " or ".join(f"armSkuName eq '{s}'" for s in skus)
    parts = ["serviceName eq 'Virtual Machines'", "priceType eq 'Consumption'", f"({sku})"]
    if regions:
        parts.append("(" + " or ".join(f"armRegionName eq '{r}'" for r in regions) + ")")
    return " and ".join(parts)


def azure_skip_reason(item: dict[str, Any]) -> str | None:
    """Why a Retail Prices item is not a Linux consumption or spot hourly price, or None."""
    if item.get("type") != "Consumption":
        return f"type {item.get('type')}"  # DevTestConsumption, Reservation
    if "Windows" in str(item.get("productName", "")):
        return "windows"
    if "Low Priority" in str(item.get("meterName", "")):
        return "low_priority"
    if item.get("currencyCode") != "USD" or item.get("unitOfMeasure") != "1 Hour":
        return "not_usd_per_hour"
    if item.get("isPrimaryMeterRegion") is False:
        return "secondary_meter"
    return None


def fetch_azure(
    gpus: dict[str, GpuSpec], skus: list[str], regions: list[str] | None, fetch: Fetch = fetch_json
) -> SourceResult:
    base = endpoint("azure", AZURE_URL)
    query = urllib.parse.urlencode(
        {"api-version": "2023-01-01-preview", "$filter": azure_filter(skus, regions)}
    )
    url: str | None = f"{base}?{query}"
    prices: dict[tuple[str, str], dict[str, float]] = {}
    skipped: Counter[str] = Counter()
    pages = 0
    while url:
        pages += 1
        if pages > AZURE_MAX_PAGES:
            raise FetchError(f"azure: more than {AZURE_MAX_PAGES} pages; narrow --regions")
        doc = fetch(url)
        if not isinstance(doc, dict) or not isinstance(doc.get("Items"), list):
            raise FetchError("azure: the answer has no Items list (not a Retail Prices page)")
        for item in doc["Items"]:
            if not isinstance(item, dict):
                skipped["malformed_item"] += 1
                continue
            why = azure_skip_reason(item)
            if why:
                skipped[why] += 1
                continue
            sku, region = item.get("armSkuName"), item.get("armRegionName")
            price = _price(item.get("retailPrice"))
            if not sku or not region or price is None:
                skipped["no_price_or_name"] += 1
                continue
            market = "spot" if str(item.get("meterName", "")).endswith(" Spot") else "on-demand"
            seen = prices.setdefault((str(region), str(sku)), {})
            if market in seen and seen[market] != price:
                skipped["conflicting_duplicate_kept_higher"] += 1
            seen[market] = max(price, seen.get(market, 0.0))
        url = doc.get("NextPageLink") or None
    nodes = []
    for (region, sku), got in sorted(prices.items()):
        match = azure_size_gpu(sku)
        spec = gpus.get(match[0]) if match else None
        count = _azure_count(sku, match[1] if match else None)
        if spec is None or count is None:
            skipped[f"unmapped_size:{sku}"] += 1
            continue
        nodes.append(
            _node(
                "azure",
                region=region,
                zone="",
                itype=sku,
                spec=spec,
                count=count,
                vcpus=0.0,
                memory_gib=0.0,
                ondemand=got.get("on-demand"),
                spot=got.get("spot"),
            )
        )
    covered = sorted(regions) if regions else sorted({n.region for n in nodes})
    return SourceResult(nodes, covered, skipped, pages)


def _azure_count(sku: str, default: int | None) -> int | None:
    """GPUs per VM: the size table's count, else the NC/NV 'ads' sizes' documented ladder."""
    if default:
        return default
    ladder = {
        "Standard_NC24ads_A100_v4": 1,
        "Standard_NC48ads_A100_v4": 2,
        "Standard_NC96ads_A100_v4": 4,
        "Standard_NC40ads_H100_v5": 1,
        "Standard_NC80adis_H100_v5": 2,
        "Standard_NCC40ads_H100_v5": 1,
        "Standard_NV36ads_A10_v5": 1,
        "Standard_NV72ads_A10_v5": 2,
    }
    return ladder.get(sku)


# --------------------------------------------------------------------------------------------
# RunPod GraphQL
# --------------------------------------------------------------------------------------------

RUNPOD_URL = "https://api.runpod.io/graphql"
RUNPOD_QUERY = (
    "query GpuTypes { gpuTypes { id displayName manufacturer memoryInGb secureCloud "
    "securePrice secureSpotPrice maxGpuCount } }"
)
#: RunPod displayName -> gpus.csv name (RunPod's "H100 PCIe" is the PCIe card, as in the
#: snapshot's mapping).
RUNPOD_DISPLAY_GPU = {
    "H100 SXM": "H100-SXM",
    "H100 PCIe": "H100-PCIe",
    "H100 NVL": "H100-NVL",
    "H200 SXM": "H200-SXM",
    "H200 NVL": "H200-NVL",
    "B200": "B200",
    "A100 SXM": "A100-80GB-SXM",
    "A100 PCIe": "A100-80GB-PCIe",
    "L40S": "L40S",
    "L40": "L40",
    "L4": "L4",
    "MI300X": "MI300X",
    "RTX 4090": "RTX4090",
    "RTX 5090": "RTX5090",
}
POD_SIZES = (1, 2, 4, 8)


def fetch_runpod(gpus: dict[str, GpuSpec], fetch: Fetch = fetch_json) -> SourceResult:
    doc = fetch(endpoint("runpod", RUNPOD_URL), body={"query": RUNPOD_QUERY})
    types = doc.get("data", {}).get("gpuTypes") if isinstance(doc, dict) else None
    if not isinstance(types, list):
        errors = doc.get("errors") if isinstance(doc, dict) else None
        raise FetchError(
            f"runpod: no data.gpuTypes in the answer{f' ({errors})' if errors else ''}"
        )
    nodes, skipped = [], Counter[str]()
    for t in types:
        if not isinstance(t, dict):
            skipped["malformed_item"] += 1
            continue
        name = RUNPOD_DISPLAY_GPU.get(str(t.get("displayName")))
        spec = gpus.get(name) if name else None
        if spec is None:
            skipped[f"gpu_not_in_gpus_csv:{t.get('displayName')}"] += 1
            continue
        od, spot = _price(t.get("securePrice")), _price(t.get("secureSpotPrice"))
        if not t.get("secureCloud") or (od is None and spot is None):
            skipped[f"no_secure_price:{t.get('displayName')}"] += 1
            continue
        max_count = t.get("maxGpuCount")
        top: int = max_count if isinstance(max_count, int) else 8
        for n in (k for k in POD_SIZES if k <= top):
            nodes.append(
                _node(
                    "runpod",
                    region=ANY_REGION,
                    zone="",
                    itype=f"{n}x_{name}_SECURE",
                    spec=spec,
                    count=n,
                    vcpus=0.0,
                    memory_gib=0.0,
                    ondemand=round(od * n, 6) if od else None,
                    spot=round(spot * n, 6) if spot else None,
                    catalog_mib=float(t["memoryInGb"]) * 1024
                    if isinstance(t.get("memoryInGb"), int | float)
                    else None,
                )
            )
    return SourceResult(nodes, ["*"], skipped, 1)


# --------------------------------------------------------------------------------------------
# Vast.ai bundles
# --------------------------------------------------------------------------------------------

VAST_URL = "https://console.vast.ai/api/v0/bundles/"
#: The bundles search body: per-field operator constraints plus order and limit (the shape the
#: Vast CLI's `search offers` and dstack's gpuhunt send); data-center hosts that are for rent.
VAST_QUERY: dict[str, Any] = {
    "rentable": {"eq": True},
    "rented": {"eq": False},
    "datacenter": {"eq": True},
    "num_gpus": {"gte": 1},
    "order": [["dph_total", "asc"]],
    "limit": 1000,
}
VAST_GPU = {
    "H100 SXM": "H100-SXM",
    "H100 NVL": "H100-NVL",
    "H100 PCIE": "H100-PCIe",
    "H200": "H200-SXM",
    "H200 NVL": "H200-NVL",
    "B200": "B200",
    "L40S": "L40S",
    "L40": "L40",
    "RTX 4090": "RTX4090",
    "RTX 5090": "RTX5090",
    "A100 SXM4": "A100-?-SXM",
    "A100 PCIE": "A100-?-PCIe",
}


def fetch_vast(gpus: dict[str, GpuSpec], fetch: Fetch = fetch_json) -> SourceResult:
    doc = fetch(endpoint("vast", VAST_URL), body=VAST_QUERY)
    offers = doc.get("offers") if isinstance(doc, dict) else None
    if not isinstance(offers, list):
        raise FetchError("vast: no offers list in the answer (not a bundles response)")
    nodes, skipped = [], Counter[str]()
    seen: set[tuple[str, str]] = set()
    for o in offers:
        if not isinstance(o, dict) or not isinstance(o.get("num_gpus"), int) or o["num_gpus"] < 1:
            skipped["malformed_item"] += 1
            continue
        n, ram_mb = o["num_gpus"], o.get("gpu_ram")
        name = VAST_GPU.get(str(o.get("gpu_name")))
        if name and "?" in name:  # A100: 40 or 80 GB by the listing's memory
            size = "80GB" if isinstance(ram_mb, int | float) and ram_mb > 60_000 else "40GB"
            name = name.replace("?", size)
            name = "A100-80GB-PCIe" if name == "A100-40GB-PCIe" and size == "80GB" else name
        spec = gpus.get(name) if name else None
        if spec is None:
            skipped[f"gpu_not_in_gpus_csv:{o.get('gpu_name')}"] += 1
            continue
        region = str(o.get("geolocation") or "unknown")
        itype = (
            f"{n}x-{str(o.get('gpu_name')).replace(' ', '_')}-m{o.get('machine_id', o.get('id'))}"
        )
        if (region, itype) in seen:
            skipped["duplicate_listing"] += 1
            continue
        seen.add((region, itype))
        od, spot = _price(o.get("dph_total")), _price(o.get("min_bid"))
        if od is None and spot is None:
            skipped["no_price"] += 1
            continue
        node = _node(
            "vast",
            region=region,
            zone="",
            itype=itype,
            spec=spec,
            count=n,
            vcpus=float(o.get("cpu_cores_effective") or 0.0),
            memory_gib=float(o.get("cpu_ram") or 0.0) / 1024,
            ondemand=od,
            spot=spot,
            catalog_mib=float(ram_mb) if isinstance(ram_mb, int | float) else None,
        )
        node.flags.add("marketplace")
        nodes.append(node)
    return SourceResult(nodes, ["*"], skipped, 1)


# --------------------------------------------------------------------------------------------
# Oracle Cloud price list
# --------------------------------------------------------------------------------------------

OCI_URL = "https://apexapps.oracle.com/pls/apex/cetools/api/v1/products/?currencyCode=USD"
#: GPU token in the product's displayName -> (gpus.csv name, OCI shape, GPUs per shape), from
#: OCI's "Compute Shapes" page (bare-metal GPU shapes; VM.GPU.A10.1 for the A10).
OCI_SHAPES: tuple[tuple[str, str, str, int], ...] = (
    ("MI300X", "MI300X", "BM.GPU.MI300X.8", 8),
    ("H200", "H200-SXM", "BM.GPU.H200.8", 8),
    ("H100", "H100-SXM", "BM.GPU.H100.8", 8),
    ("B200", "B200", "BM.GPU.B200.8", 8),
    ("L40S", "L40S", "BM.GPU.L40S.4", 4),
    ("A100 80", "A100-80GB-SXM", "BM.GPU.A100-v2.8", 8),
    ("A100", "A100-40GB-SXM", "BM.GPU4.8", 8),
    ("A10", "A10", "VM.GPU.A10.1", 1),
)


def _oci_payg(item: dict[str, Any]) -> float | None:
    for loc in item.get("currencyCodeLocalizations") or []:
        if isinstance(loc, dict) and loc.get("currencyCode") == "USD":
            for p in loc.get("prices") or []:
                if isinstance(p, dict) and p.get("model") == "PAY_AS_YOU_GO":
                    return _price(p.get("value"))
    return None


def _pages(first: Any, fetch: Fetch) -> Iterator[Any]:
    """The OCI answer and any pages its ``links`` (rel "next") or ``next`` point to."""
    doc, n = first, 0
    while doc is not None:
        yield doc
        n += 1
        nxt = None
        if isinstance(doc, dict):
            nxt = doc.get("next") or next(
                (
                    link.get("href")
                    for link in doc.get("links") or []
                    if isinstance(link, dict) and link.get("rel") == "next"
                ),
                None,
            )
        doc = fetch(nxt) if nxt and n < 50 else None


def fetch_oci(gpus: dict[str, GpuSpec], fetch: Fetch = fetch_json) -> SourceResult:
    first = fetch(endpoint("oci", OCI_URL))
    nodes, skipped, pages = [], Counter[str](), 0
    for doc in _pages(first, fetch):
        pages += 1
        items = doc.get("items") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise FetchError("oci: no items list in the answer (not a price list response)")
        for item in items:
            if not isinstance(item, dict) or item.get("metricName") != "GPU Per Hour":
                skipped["not_a_gpu_hour"] += 1
                continue
            name = str(item.get("displayName", ""))
            shape = next((s for s in OCI_SHAPES if re.search(rf"\b{s[0]}\b", name)), None)
            per_gpu = _oci_payg(item)
            if shape is None or per_gpu is None or shape[1] not in gpus:
                skipped[f"unmapped:{name or item.get('partNumber')}"] += 1
                continue
            _, gpu, itype, n = shape
            nodes.append(
                _node(
                    "oci",
                    region=ANY_REGION,
                    zone="",
                    itype=itype,
                    spec=gpus[gpu],
                    count=n,
                    vcpus=0.0,
                    memory_gib=0.0,
                    ondemand=round(per_gpu * n, 6),
                    spot=None,
                )
            )
    unique = {n.instance_type: n for n in nodes}  # a part listed twice: the last one wins
    if len(unique) != len(nodes):
        skipped["duplicate_part"] += len(nodes) - len(unique)
    return SourceResult(list(unique.values()), ["*"], skipped, pages)
