"""AWS on-demand prices from the Price List: the ``pricing:GetProducts`` API or a saved
``aws pricing get-products`` output, and the parser of one price-list document.

Pure apart from the client it is given (no boto3 import). A malformed document is skipped
with a warning naming its SKU; disagreeing documents for one type keep the higher price.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from provisioner.errors import DataError, UsageError

#: Product attributes of a plain Linux on-demand instance hour.
PRODUCT_FILTERS: dict[str, str] = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
}
#: The Pricing API's filter values are at most 1024 characters (ANY_OF: comma-separated).
_FILTER_VALUE_MAX = 1024


@dataclass
class OnDemandPrices:
    usd_per_hour: dict[str, float] = field(default_factory=dict)  # instance type -> node $/h
    conflicts: set[str] = field(default_factory=set)  # types with disagreeing documents
    warnings: list[str] = field(default_factory=list)


class OnDemandSource(Protocol):
    """Where on-demand prices come from; called from the region workers (thread-safe)."""

    name: str

    def __call__(self, region: str, instance_types: Sequence[str]) -> OnDemandPrices: ...


class MalformedPriceDocument(DataError):
    """One price-list entry without the documented shape (skipped with a warning)."""


def parse_price_document(doc: str | dict[str, Any]) -> tuple[dict[str, str], float]:
    """(product attributes, USD per hour) of one ``get_products`` PriceList entry.

    Raises MalformedPriceDocument naming what is missing or wrong.
    """
    try:
        data = json.loads(doc) if isinstance(doc, str) else doc
    except json.JSONDecodeError as e:
        raise MalformedPriceDocument(f"not JSON ({e.msg})") from None
    try:
        attrs = data["product"]["attributes"]
        terms = data["terms"]["OnDemand"]
    except (KeyError, TypeError):
        raise MalformedPriceDocument("no product.attributes or terms.OnDemand") from None
    if not isinstance(attrs, dict) or not attrs.get("instanceType"):
        raise MalformedPriceDocument("no product.attributes.instanceType")
    usd: set[float] = set()
    try:
        for term in terms.values():
            for dim in term["priceDimensions"].values():
                if dim.get("unit") in ("Hrs", "Hours"):
                    usd.add(float(dim["pricePerUnit"]["USD"]))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise MalformedPriceDocument(f"bad priceDimensions ({type(e).__name__}: {e})") from None
    if len(usd) != 1:
        what = "no hourly USD price" if not usd else f"several hourly prices {sorted(usd)}"
        raise MalformedPriceDocument(what)
    price = usd.pop()
    if not 0 <= price < float("inf"):
        raise MalformedPriceDocument(f"price {price!r} is not a finite number >= 0")
    return {str(k): str(v) for k, v in attrs.items()}, price


def _collect(
    out: OnDemandPrices, docs: Iterable[Any], region: str, wanted: set[str], where: str
) -> None:
    for doc in docs:
        try:
            attrs, usd = parse_price_document(doc)
        except MalformedPriceDocument as e:
            sku = _sku(doc)
            out.warnings.append(
                f"{region}: skipped a malformed price document{sku} from {where}: {e}"
            )
            continue
        if attrs.get("regionCode", region) != region or attrs["instanceType"] not in wanted:
            continue
        if any(attrs.get(k) != v for k, v in PRODUCT_FILTERS.items()):
            continue
        itype = attrs["instanceType"]
        seen = out.usd_per_hour.get(itype)
        if seen is not None and seen != usd:
            out.conflicts.add(itype)
            usd = max(seen, usd)  # never understate a price (as the snapshot build does)
        out.usd_per_hour[itype] = usd


def _sku(doc: Any) -> str:
    try:
        data = json.loads(doc) if isinstance(doc, str) else doc
        return f" (sku {data['product']['sku']})"
    except Exception:
        return ""


class PricingApi:
    """On-demand prices from the AWS Price List Query API (``pricing:GetProducts``)."""

    name = "Pricing API GetProducts"

    def __init__(self, client: Any) -> None:
        self.client = client

    def filters(self, region: str, instance_types: Sequence[str]) -> list[dict[str, str]]:
        base = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in PRODUCT_FILTERS.items()]
        base.append({"Type": "TERM_MATCH", "Field": "regionCode", "Value": region})
        base.append({"Type": "ANY_OF", "Field": "instanceType", "Value": ",".join(instance_types)})
        return base

    def __call__(self, region: str, instance_types: Sequence[str]) -> OnDemandPrices:
        out = OnDemandPrices()
        paginator = self.client.get_paginator("get_products")
        for chunk in chunk_values(sorted(instance_types), _FILTER_VALUE_MAX):
            for page in paginator.paginate(
                ServiceCode="AmazonEC2",
                Filters=self.filters(region, chunk),
                FormatVersion="aws_v1",
                PaginationConfig={"PageSize": 100},
            ):
                _collect(out, page.get("PriceList", []), region, set(chunk), self.name)
        return out


def chunk_values(values: Sequence[str], limit: int) -> Iterator[list[str]]:
    """Split values into comma-joined groups of at most `limit` characters."""
    chunk: list[str] = []
    size = 0
    for v in values:
        extra = len(v) + (1 if chunk else 0)
        if chunk and size + extra > limit:
            yield chunk
            chunk, size, extra = [], 0, len(v)
        chunk.append(v)
        size += extra
    if chunk:
        yield chunk


class PriceListFile:
    """On-demand prices from a saved ``aws pricing get-products --service-code AmazonEC2``
    output: a JSON object with a ``PriceList`` array (of JSON strings or objects), or an array
    of such objects (several pages). For hosts without access to the Pricing API and for
    endpoints that do not serve it (moto)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = f"{self.path.name}"
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except OSError as e:
            raise UsageError(f"--pricing-file {self.path}: cannot read ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"--pricing-file {self.path}: not JSON ({e})") from None
        pages = data if isinstance(data, list) else [data]
        if not all(isinstance(p, dict) and isinstance(p.get("PriceList"), list) for p in pages):
            raise UsageError(
                f"--pricing-file {self.path}: expected the JSON of `aws pricing get-products` "
                '(an object with a "PriceList" array, or an array of them)'
            )
        self.documents: list[Any] = [doc for p in pages for doc in p["PriceList"]]

    def __call__(self, region: str, instance_types: Sequence[str]) -> OnDemandPrices:
        out = OnDemandPrices()
        _collect(out, self.documents, region, set(instance_types), self.name)
        return out
