"""How long `prov prices refresh --cloud azure|runpod|vast|oci` takes against a local server.

    python benchmarks/bench_live_sources.py                  # Azure: 40 pages of 100 items
    python benchmarks/bench_live_sources.py --pages 200 --rtt-ms 150 --json

A ThreadingHTTPServer on 127.0.0.1 serves the recorded responses of
tests/pricing/fixtures/live. The Azure answer is blown up to --pages pages of 100 items (the
API's page size) by repeating the recorded items over the regions of the embedded snapshot, each
page linked to the next by NextPageLink, as the real API pages. Every request waits --rtt-ms
before it is answered (loopback has no round trip). Each source runs --runs times into a
temporary cache; the median wall time is reported. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pricing.live_refresh import refresh_cloud
from pricing.offers import load_offers

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "pricing" / "fixtures" / "live"


def azure_pages(pages: int) -> list[dict[str, Any]]:
    items = [
        *json.loads((FIXTURES / "azure_page1.json").read_text())["Items"],
        *json.loads((FIXTURES / "azure_page2.json").read_text())["Items"],
    ]
    regions = sorted({o.region for o in load_offers() if o.cloud == "azure"})
    out, k = [], 0
    for p in range(pages):
        page = []
        for _ in range(100):
            item = dict(items[k % len(items)])
            item["armRegionName"] = regions[(k // len(items)) % len(regions)]
            page.append(item)
            k += 1
        nxt = f"{{base}}/azure/prices?$skip={(p + 1) * 100}" if p + 1 < pages else None
        out.append({"BillingCurrency": "USD", "Items": page, "NextPageLink": nxt, "Count": 100})
    return out


def serve(pages: list[dict[str, Any]], rtt_s: float) -> ThreadingHTTPServer:
    files = {
        "/runpod/graphql": (FIXTURES / "runpod.json").read_text(),
        "/vast/bundles/": (FIXTURES / "vast.json").read_text(),
        "/oci/products/": (FIXTURES / "oci.json").read_text(),
    }

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            time.sleep(rtt_s)
            url = urllib.parse.urlsplit(self.path)
            base = f"http://{self.headers['Host']}"
            if url.path == "/azure/prices":
                skip = int(urllib.parse.parse_qs(url.query).get("$skip", ["0"])[0])
                text = json.dumps(pages[skip // 100]).replace("{base}", base)
            else:
                text = files[url.path]
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=40, help="Azure pages of 100 items")
    parser.add_argument("--rtt-ms", type=float, default=80.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    httpd = serve(azure_pages(args.pages), args.rtt_ms / 1000)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    os.environ.update(
        PROV_AZURE_PRICES_URL=f"{base}/azure/prices",
        PROV_RUNPOD_PRICES_URL=f"{base}/runpod/graphql",
        PROV_VAST_PRICES_URL=f"{base}/vast/bundles/",
        PROV_OCI_PRICES_URL=f"{base}/oci/products/",
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    figures: dict[str, Any] = {"azure_pages": args.pages, "rtt_ms": args.rtt_ms}
    try:
        for cloud in ("azure", "runpod", "vast", "oci"):
            times, last = [], None
            for run in range(args.runs):
                last = refresh_cloud(cloud, directory=tmp / f"{cloud}-{run}")
                assert last.error is None, last.error
                times.append(last.seconds)
            assert last is not None
            figures[cloud] = {
                "median_s": round(statistics.median(times), 3),
                "offers": last.offers,
                "pages": last.pages,
                "skipped": sum(last.skipped.values()),
            }
    finally:
        httpd.shutdown()
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"live sources on 127.0.0.1, {args.rtt_ms:g} ms per request, {args.runs} runs each")
    for cloud in ("azure", "runpod", "vast", "oci"):
        f = figures[cloud]
        print(
            f"  {cloud:<7} median {f['median_s']:.3f} s  {f['pages']:>4} pages  "
            f"{f['offers']:>4} offers  {f['skipped']:>5} rows skipped"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
