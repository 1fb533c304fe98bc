"""`prov prices refresh --cloud azure|runpod|vast|oci` against recorded responses.

A real HTTP server on 127.0.0.1 serves the recorded, real-shaped responses of
tests/pricing/fixtures/live (their sources in SOURCE.md there); the CLI finds it through
PROV_<CLOUD>_PRICES_URL. Expected values are worked out by hand from those files.
"""

from __future__ import annotations

import functools
import json
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pricing.http_json import FetchError, fetch_json
from pricing.live_refresh import refresh_cloud
from pricing.offers import current_offers, read_live_cache
from provisioner.cli.main import app

FIXTURES = Path(__file__).parent / "fixtures" / "live"
TODAY = datetime.now(UTC).date().isoformat()


class Recorded(BaseHTTPRequestHandler):
    """Serves fixtures by path; ``fail`` maps a path to statuses answered before the file."""

    routes: dict[str, str]
    fail: dict[str, list[int]]
    seen: list[tuple[str, str, dict[str, list[str]], Any]]
    base: str

    def _answer(self, body: Any) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        self.seen.append((self.command, url.path, query, body))
        pending = self.fail.get(url.path)
        if pending:
            self.send_response(pending.pop(0))
            self.end_headers()
            return
        name = self.routes.get(url.path)
        if url.path == "/azure/prices" and "$skip" in query:
            name = "azure_page2.json"
        if name is None:
            self.send_response(404)
            self.end_headers()
            return
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        data = (FIXTURES / name).read_text().replace("{base}", base).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self._answer(json.loads(self.rfile.read(length) or b"null"))

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[type[Recorded]]:
    handler = type(
        "Handler",
        (Recorded,),
        {
            "routes": {
                "/azure/prices": "azure_page1.json",
                "/runpod/graphql": "runpod.json",
                "/vast/bundles/": "vast.json",
                "/oci/products/": "oci.json",
            },
            "fail": {},
            "seen": [],
        },
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = handler.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("PROV_AZURE_PRICES_URL", f"{base}/azure/prices")
    monkeypatch.setenv("PROV_RUNPOD_PRICES_URL", f"{base}/runpod/graphql")
    monkeypatch.setenv("PROV_VAST_PRICES_URL", f"{base}/vast/bundles/")
    monkeypatch.setenv("PROV_OCI_PRICES_URL", f"{base}/oci/products/")
    monkeypatch.setenv("PROV_CACHE_DIR", str(tmp_path / "cache"))
    yield handler
    httpd.shutdown()
    httpd.server_close()


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def show(*args: str) -> list[dict[str, Any]]:
    result = run("prices", "show", "--json", "--top", "0", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_done_when_azure_refresh_fills_the_cache_and_show_uses_it(server: type[Recorded]) -> None:
    before = {
        (r["region"], r["instance_type"]): r for r in show("--cloud", "azure", "--gpu", "H100")
    }
    assert before[("eastus", "Standard_ND96isr_H100_v5")]["prices_as_of"] == "2026-05-20"

    result = run("prices", "refresh", "--cloud", "azure")
    assert result.exit_code == 0, result.output
    assert "azure        2 offers, 2 regions, 2 pages" in result.stdout
    # two pages: the first with the filter, the second through NextPageLink ($skip)
    (first, second) = [s for s in server.seen if s[1] == "/azure/prices"]
    flt = first[2]["$filter"][0]
    assert "serviceName eq 'Virtual Machines'" in flt and "priceType eq 'Consumption'" in flt
    assert "armSkuName eq 'Standard_ND96isr_H100_v5'" in flt
    assert "armSkuName eq 'Standard_ND96is_MI300X_v5'" in flt  # aliases are asked for too
    assert second[2]["$skip"] == ["1000"]

    rows = show("--cloud", "azure", "--gpu", "H100", "--region", "eastus")
    h100 = next(r for r in rows if r["instance_type"] == "Standard_ND96isr_H100_v5")
    # Linux consumption and its Spot meter only: not Windows 104.32, Low Priority 19.664,
    # Reservation 61.9416 or DevTest 70.0
    assert (h100["ondemand_usd_per_hour"], h100["spot_usd_per_hour"]) == (98.32, 18.169536)
    assert (h100["ondemand_usd_per_gpu_hour"], h100["spot_usd_per_gpu_hour"]) == (12.29, 2.2712)
    assert h100["prices_as_of"] == TODAY and h100["price_age_days"] == 0
    assert "live" in h100["flags"]
    # the alias pair is one live offer, named by the RDMA size
    [mi] = show("--cloud", "azure", "--gpu", "MI300X", "--region", "eastus2")
    assert (mi["instance_type"], mi["aliases"]) == (
        "Standard_ND96isr_MI300X_v5",
        ["Standard_ND96is_MI300X_v5"],
    )
    assert (mi["ondemand_usd_per_hour"], mi["spot_usd_per_hour"]) == (48.0, 8.8704)
    # regions the refresh did not fetch keep their embedded rows
    west = show("--cloud", "azure", "--gpu", "MI300X", "--region", "westus3")
    assert [r["prices_as_of"] for r in west] == ["2026-05-20"]
    # quote reads the same cache
    quote = run(
        "quote", "-m", "moonshotai/Kimi-K2-Thinking", "-q", "int4", "--ctx", "128k", "--cloud",
        "azure", "--region", "eastus", "--gpu", "H100", "--json", "--top", "1",
    )  # fmt: skip
    assert quote.exit_code == 0, quote.output
    plan = json.loads(quote.stdout)["plans"][0]
    assert plan["prices_as_of"] == TODAY and plan["price_age_days"] == 0
    if plan["market"] == "spot":
        assert plan["spot_risk"]["interruption_per_month"] == "unknown"


def test_runpod_vast_oci_parse_by_hand(server: type[Recorded], tmp_path: Path) -> None:
    result = run("prices", "refresh", "--cloud", "runpod,vast,oci")
    assert result.exit_code == 0, result.output
    # RunPod: H100 SXM 2.99/GPU -> 1x 2.99, 2x 5.98, 4x 11.96, 8x 23.92 (runpod.csv 8x: 23.92)
    pods = {r["instance_type"]: r for r in show("--cloud", "runpod")}
    assert pods["8x_H100-SXM_SECURE"]["ondemand_usd_per_hour"] == 23.92
    assert pods["8x_H100-SXM_SECURE"]["spot_usd_per_hour"] == 21.52
    assert pods["8x_H200-SXM_SECURE"]["ondemand_usd_per_hour"] == 31.92
    assert pods["1x_B200_SECURE"]["spot_usd_per_hour"] is None
    assert {r["multi_node"] for r in pods.values()} == {False}
    assert not any("L40S" in k or "A6000" in k for k in pods)  # 0/-1 prices, unknown GPU
    assert len(pods) == 16  # 4 GPUs x pod sizes 1, 2, 4, 8
    # the RunPod GraphQL request is a POST of the gpuTypes query
    [(method, _, _, body)] = [s for s in server.seen if s[1] == "/runpod/graphql"]
    assert method == "POST" and "gpuTypes" in body["query"] and "securePrice" in body["query"]
    # Vast: one listing per host; the 1e300 listing and the RTX 3090 are skipped
    vast = show("--cloud", "vast")
    assert sorted((r["gpu"], r["gpus_per_node"], r["ondemand_usd_per_hour"]) for r in vast) == [
        ("A100-80GB-SXM", 4, 4.4),
        ("H100-SXM", 8, 16.02),
        ("H200-SXM", 8, 21.35),
    ]
    assert {r["multi_node"] for r in vast} == {False}
    [(method, _, _, body)] = [s for s in server.seen if s[1] == "/vast/bundles/"]
    assert method == "POST" and body["rentable"] == {"eq": True} and body["limit"] == 1000
    # OCI: USD per GPU-hour x GPUs per shape; no spot
    oci = {r["instance_type"]: r for r in show("--cloud", "oci")}
    assert oci["BM.GPU.H100.8"]["ondemand_usd_per_hour"] == 80.0
    assert oci["BM.GPU.B200.8"]["ondemand_usd_per_hour"] == 112.0
    assert oci["BM.GPU.MI300X.8"]["ondemand_usd_per_hour"] == 48.0
    assert len(oci) == 3 and all(r["spot_usd_per_hour"] is None for r in oci.values())
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir() if p.suffix == ".json") == [
        "offers-oci.json",
        "offers-runpod.json",
        "offers-vast.json",
    ]
    # the whole cloud is covered: RunPod's embedded per-datacenter rows are replaced
    assert {o.region for o in current_offers() if o.cloud == "runpod"} == {"any"}


def test_one_failing_source_leaves_its_cache_and_the_others_refresh(
    server: type[Recorded], tmp_path: Path
) -> None:
    assert run("prices", "refresh", "--cloud", "vast").exit_code == 0
    old = read_live_cache("vast", tmp_path / "cache")
    assert old is not None
    server.routes.pop("/vast/bundles/")  # now 404: not retried, a clear failure
    result = run("prices", "refresh", "--cloud", "vast,oci")
    assert result.exit_code == 1
    assert "vast     FAILED" in result.stdout and "HTTP 404" in result.stdout
    assert "oci          3 offers" in result.stdout
    assert "1 of 2 sources failed (vast)" in result.stderr
    kept = read_live_cache("vast", tmp_path / "cache")
    assert kept is not None and kept.offers == old.offers  # untouched, not half-written
    # review7 #22: one source, or every source, failing has no "others were refreshed"
    alone = run("prices", "refresh", "--cloud", "vast")
    assert alone.exit_code == 1
    assert alone.stderr.strip() == (
        "prov: error: vast prices not refreshed; its previous cache is kept"
    )
    server.routes.pop("/runpod/graphql", None)
    both = run("prices", "refresh", "--cloud", "vast,runpod")
    assert both.exit_code == 1
    assert both.stderr.strip() == (
        "prov: error: 2 of 2 sources failed (vast, runpod); every previous cache is kept"
    )
    assert read_live_cache("oci", tmp_path / "cache") is not None


def test_aws_without_credentials_among_others_is_exit_2_after_the_others_refresh(
    server: type[Recorded], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No AWS credentials is configuration to fix (exit 2, test_credentials_exit_codes.py),
    also beside other sources, which still refresh."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = run("prices", "refresh", "--cloud", "aws,oci")
    assert result.exit_code == 2, result.output
    assert "aws      FAILED: no AWS credentials found (" in result.stdout
    assert "oci          3 offers" in result.stdout
    assert result.stderr.strip() == (
        "prov: error: 1 of 2 sources failed (aws); their previous cache is kept, the others "
        "were refreshed"
    )
    assert read_live_cache("oci", tmp_path / "cache") is not None


def test_retries_with_backoff_then_succeeds(server: type[Recorded], tmp_path: Path) -> None:
    server.fail["/oci/products/"] = [503, 429]
    waits: list[float] = []
    fetch = functools.partial(fetch_json, backoff_s=0.25, sleep=waits.append)
    done = refresh_cloud("oci", directory=tmp_path / "c", fetch=fetch)
    assert done.error is None and done.offers == 3
    assert waits == [0.25, 0.5]  # exponential backoff between the three attempts
    server.fail["/oci/products/"] = [503] * 4
    failed = refresh_cloud("oci", directory=tmp_path / "d", fetch=fetch)
    assert failed.error is not None and "HTTP 503 after 4 attempts" in failed.error
    assert not (tmp_path / "d").exists()  # nothing written


def test_a_source_that_is_not_json_or_not_the_shape_fails_cleanly(
    server: type[Recorded], tmp_path: Path
) -> None:
    server.routes["/oci/products/"] = "SOURCE.md"  # not JSON
    bad = refresh_cloud("oci", directory=tmp_path / "c")
    assert bad.error is not None and "not JSON" in bad.error
    server.routes["/oci/products/"] = "vast.json"  # JSON, wrong shape
    wrong = refresh_cloud("oci", directory=tmp_path / "c")
    assert wrong.error == "oci: no items list in the answer (not a price list response)"
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_json(server.base + "/nothing")


def test_unknown_cloud_is_usage_error(server: type[Recorded]) -> None:
    result = run("prices", "refresh", "--cloud", "gcp,azure")
    assert result.exit_code == 2
    assert "--cloud 'gcp': no live price source" in result.stderr


def test_a_cloud_without_a_live_source_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    out = refresh_cloud("gcp", directory=tmp_path)
    assert out.error == "no live price source for 'gcp'; allowed: azure, runpod, vast, oci"
    assert list(tmp_path.iterdir()) == []
