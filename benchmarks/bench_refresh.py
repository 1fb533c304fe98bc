"""What running regions concurrently saves in `prov prices refresh --cloud aws`.

    python benchmarks/bench_refresh.py                 # 20 regions, 80 ms per call, a table
    python benchmarks/bench_refresh.py --rtt-ms 0 --json

A moto server on 127.0.0.1 answers EC2 (regions, instance types with GpuInfo, offerings, AZs);
its spot price history is seeded with one record per instance type (moto's own is a
placeholder) and on-demand prices come from an in-process source. Loopback has no round trip,
which would hide what concurrency saves, so every AWS call waits --rtt-ms before it is sent
(botocore's before-send event; one get_products page is charged the same). The same refresh
then runs with one worker (serial) and with the default eight; the cache goes to a temporary
directory. Needs the test extra (moto). A benchmark, not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pricing.aws_price_list import OnDemandPrices
from pricing.aws_refresh import refresh_aws


class InProcessOnDemand:
    """On-demand prices without the Pricing API (moto has none): one page's wait, then $50/h."""

    name = "in-process on-demand prices"

    def __init__(self, rtt_s: float) -> None:
        self.rtt_s = rtt_s

    def __call__(self, region: str, instance_types: Sequence[str]) -> OnDemandPrices:
        time.sleep(self.rtt_s)
        return OnDemandPrices({t: 50.0 for t in instance_types})


def _seed_spot() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.responses.spot_instances import SpotInstances

    def describe_spot_price_history(handler: Any) -> Any:
        types = handler._get_param("InstanceTypes", []) or []
        rows = [
            {
                "InstanceType": t,
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": "20.000000",
                "AvailabilityZone": f"{handler.region}a",
                "Timestamp": "2026-11-20T10:00:00.000Z",
            }
            for t in types
        ]
        return ActionResult({"SpotPriceHistory": rows})

    setattr(SpotInstances, "describe_spot_price_history", describe_spot_price_history)  # noqa: B010


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regions", type=int, default=20)
    parser.add_argument("--rtt-ms", type=float, default=80.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import boto3
    from moto.server import ThreadedMotoServer

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    tmp = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "none"),
    )
    _seed_spot()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    rtt = args.rtt_ms / 1000

    def session() -> Any:
        s = boto3.session.Session()
        if rtt:
            s.events.register("before-send", lambda **_: time.sleep(rtt))
        return s

    ec2 = boto3.client("ec2", region_name="us-east-1")
    commercial = sorted(
        r["RegionName"]
        for r in ec2.describe_regions()["Regions"]
        if not r["RegionName"].startswith(("cn-", "us-gov-"))
    )
    regions = commercial[: args.regions]
    figures: dict[str, Any] = {"regions": len(regions), "rtt_ms": args.rtt_ms}
    try:
        for label, workers in (("serial", 1), ("concurrent", 8)):
            times = []
            for run in range(args.runs):
                report = refresh_aws(
                    regions,
                    None,
                    session=session(),
                    ondemand=InProcessOnDemand(rtt),
                    directory=tmp / f"{label}-{run}",
                    max_workers=workers,
                    progress=False,
                )
                assert not report.failed, [r.error for r in report.failed]
                times.append(report.seconds)
            figures[label] = {
                "workers": workers,
                "median_s": round(statistics.median(times), 2),
                "runs_s": [round(t, 2) for t in times],
                "offers": report.total_offers,
            }
    finally:
        server.stop()
    figures["speedup"] = round(figures["serial"]["median_s"] / figures["concurrent"]["median_s"], 1)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"refresh of {len(regions)} regions, default families, {args.rtt_ms:g} ms per AWS call")
    for label in ("serial", "concurrent"):
        f = figures[label]
        print(
            f"  {label:<10} workers={f['workers']}  median {f['median_s']:.2f} s  "
            f"runs {f['runs_s']}  ({f['offers']} offers)"
        )
    print(f"  speed-up x{figures['speedup']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
