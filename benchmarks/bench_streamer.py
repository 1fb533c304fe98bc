"""Weights from a bucket: the Run:ai Model Streamer against plain reads, on this machine.

    python benchmarks/bench_streamer.py                       # 3 GB, concurrency 1..32, a table
    python benchmarks/bench_streamer.py --size-gb 2 --concurrency 1,4,16 --json

What it does: writes a safetensors checkpoint of --size-gb (F16 tensors of random bytes, split
into --files shards like a Hub checkpoint) to a temporary directory, serves it from a local S3
(moto's server on 127.0.0.1, path-style), and reads it into CPU memory by

* ``s3-sequential``: one GET per shard, read start to end (what a naive loader does);
* ``s3-ranged``: boto3 ranged GETs of 8 MiB on N threads (AWS's own advice for throughput);
* ``runai-s3``: runai-model-streamer's SafetensorsStreamer from ``s3://`` with
  RUNAI_STREAMER_CONCURRENCY=N (vLLM's ``--load-format runai_streamer`` path), into CPU tensors;
* ``local-sequential``: a plain sequential read of each shard from disk (8 MiB chunks into one
  buffer; after the S3 rows, so the page cache is as warm as for the streamer's local rows);
* ``runai-local``: the same streamer from the local files.

**It measures the code path on this machine, not AWS**: a 2-core VM, loopback instead of a NIC,
moto (Python) instead of S3. The rates prov uses for a p5 node come from published measurements
(provisioner/data/time_to_serve.json); this shows the streamer works against an S3 API and how
its concurrency behaves when the server, not the network, is the limit. The streamer is an
optional extra (``pip install '.[streamer]'``: it pulls torch); when it cannot be imported or
run, the row says why with the exact error and the boto3 rows remain the comparison.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CHUNK = 8 * 1024 * 1024  # AWS: ranged GETs of 8-16 MB
BLOCK = 16 * 1024 * 1024  # tensor size; the random block is reused, content does not matter
BUCKET = "prov-weights"


@dataclass
class Row:
    method: str
    concurrency: int | None
    bytes: int
    seconds: float
    digest: str | None = None
    error: str | None = None

    @property
    def gb_per_s(self) -> float | None:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 and not self.error else None


def write_checkpoint(folder: Path, total_bytes: int, files: int) -> list[Path]:
    """Shards model-0000k-of-0000n.safetensors of F16 [rows, 4096] tensors; returns paths."""
    rng_block = os.urandom(BLOCK)
    per_file = max(BLOCK, total_bytes // files // BLOCK * BLOCK)
    paths = []
    for k in range(files):
        n = per_file // BLOCK
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        for i in range(n):
            rows = BLOCK // (2 * 4096)
            header[f"layers.{k}.w{i}"] = {
                "dtype": "F16",
                "shape": [rows, 4096],
                "data_offsets": [i * BLOCK, (i + 1) * BLOCK],
            }
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
        path = folder / f"model-{k + 1:05d}-of-{files:05d}.safetensors"
        with open(path, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            for i in range(n):  # vary each tensor so a misplaced range changes the digest
                fh.write(struct.pack("<Q", k * 1_000_003 + i) + rng_block[8:])
        paths.append(path)
    return paths


def tensor_bytes(path: Path) -> int:
    """Bytes of tensor data in a safetensors file (its size minus the header)."""
    with open(path, "rb") as fh:
        n = int(struct.unpack("<Q", fh.read(8))[0])
    return path.stat().st_size - 8 - n


class _RangeReader:
    """A moto object's bytes read on demand: ``len()`` and one slice, under the key's lock."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.size)

    def __getitem__(self, part: slice) -> bytes:
        with self.key.lock:
            self.key._value_buffer.seek(part.start or 0)
            return bytes(self.key._value_buffer.read((part.stop or len(self)) - (part.start or 0)))


@contextmanager
def ranged_gets_read_the_range() -> Iterator[None]:
    """Make moto answer a ranged GET by reading the range, as S3 does.

    moto materialises the whole object for every GET and slices the range out afterwards, so an
    8 MiB range of a 750 MB shard costs 750 MB of copying: ranged and streamed reads would
    measure moto's quirk. While this is active, a GET with a Range header gets a lazy view of
    the object that the range handler slices; everything else is moto's own code."""
    import threading

    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    ranged = threading.local()
    value: Any = FakeKey.__dict__["value"]  # the property object itself
    get_object = S3Response.get_object

    def lazy_value(key: Any) -> Any:
        return _RangeReader(key) if getattr(ranged, "on", False) else value.fget(key)

    def get_object_ranged(self: Any) -> Any:
        ranged.on = bool(self.headers.get("range"))
        try:
            return get_object(self)
        finally:
            ranged.on = False

    FakeKey.value = property(lazy_value, value.fset)  # type: ignore[method-assign,assignment]
    S3Response.get_object = get_object_ranged  # type: ignore[method-assign]
    try:
        yield
    finally:
        FakeKey.value = value  # type: ignore[method-assign]
        S3Response.get_object = get_object  # type: ignore[method-assign]


@contextmanager
def local_s3(paths: Sequence[Path]) -> Iterator[Any]:
    """A moto S3 server on 127.0.0.1 holding the shards; yields a boto3 client. The endpoint
    and fake credentials go to the environment, where the streamer's S3 client reads them."""
    import logging

    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        s3 = boto3.client("s3", config=Config(max_pool_connections=64))
        s3.create_bucket(Bucket=BUCKET)
        for p in paths:
            s3.upload_file(str(p), BUCKET, f"model/{p.name}")
        yield s3
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def _digest(parts: Sequence[bytes | bytearray | memoryview]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def local_sequential(paths: Sequence[Path], verify: bool) -> Row:
    """Each shard read start to end in 8 MiB chunks into one preallocated buffer."""
    t0 = time.perf_counter()
    blobs = []
    for p in paths:
        buf = bytearray(p.stat().st_size)
        view = memoryview(buf)
        with open(p, "rb", buffering=0) as fh:
            done = 0
            while done < len(buf):
                done += fh.readinto(view[done : done + CHUNK]) or 0
        blobs.append(buf)
    dt = time.perf_counter() - t0
    return Row("local-sequential", None, sum(map(len, blobs)), dt,
               _digest(blobs) if verify else None)  # fmt: skip


def s3_sequential(s3: Any, paths: Sequence[Path], verify: bool) -> Row:
    t0 = time.perf_counter()
    blobs = [s3.get_object(Bucket=BUCKET, Key=f"model/{p.name}")["Body"].read() for p in paths]
    dt = time.perf_counter() - t0
    return Row("s3-sequential", 1, sum(map(len, blobs)), dt, _digest(blobs) if verify else None)


def s3_ranged(s3: Any, paths: Sequence[Path], concurrency: int, verify: bool) -> Row:
    """Every shard as 8 MiB ranged GETs on ``concurrency`` threads, into one buffer each."""
    sizes = [p.stat().st_size for p in paths]
    bufs = [bytearray(n) for n in sizes]
    jobs = [(i, off) for i, n in enumerate(sizes) for off in range(0, n, CHUNK)]

    def fetch(job: tuple[int, int]) -> None:
        i, off = job
        end = min(off + CHUNK, sizes[i]) - 1
        body = s3.get_object(
            Bucket=BUCKET, Key=f"model/{paths[i].name}", Range=f"bytes={off}-{end}"
        )["Body"].read()
        bufs[i][off : end + 1] = body

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(fetch, jobs))
    dt = time.perf_counter() - t0
    return Row("s3-ranged", concurrency, sum(sizes), dt, _digest(bufs) if verify else None)


def _runai(method: str, uris: Sequence[str], concurrency: int, verify: bool) -> Row:
    """The streamer's tensors into CPU memory; digest of the tensor bytes in file order."""
    os.environ["RUNAI_STREAMER_CONCURRENCY"] = str(concurrency)
    try:
        from runai_model_streamer import SafetensorsStreamer
    except Exception as e:  # ImportError, or a native library that does not load here
        return Row(method, concurrency, 0, 0.0, error=f"{type(e).__name__}: {e}")
    total, tensors = 0, {}
    try:
        t0 = time.perf_counter()
        with SafetensorsStreamer() as streamer:
            streamer.stream_files(list(uris))
            for name, tensor in streamer.get_tensors():
                t = tensor.clone() if verify else tensor  # the streamer reuses its buffers
                total += t.numel() * t.element_size()
                if verify:
                    tensors[name] = t
        dt = time.perf_counter() - t0
    except Exception as e:
        return Row(method, concurrency, total, 0.0, error=f"{type(e).__name__}: {e}")
    digest = None
    if verify:  # file order: shard name, then the tensor's index inside it
        order = sorted(tensors, key=lambda n: (int(n.split(".")[1]), int(n.split(".w")[1])))
        digest = _digest([tensors[n].numpy().view("uint8").tobytes() for n in order])
    return Row(method, concurrency, total, dt, digest)


def runai_s3(paths: Sequence[Path], concurrency: int, verify: bool) -> Row:
    return _runai("runai-s3", [f"s3://{BUCKET}/model/{p.name}" for p in paths], concurrency, verify)


def runai_local(paths: Sequence[Path], concurrency: int, verify: bool) -> Row:
    return _runai("runai-local", [str(p) for p in paths], concurrency, verify)


def tensor_digest(paths: Sequence[Path]) -> str:
    """sha256 of the tensor data of every shard in file order (what the streamer returns)."""
    parts = []
    for p in paths:
        blob = p.read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        parts.append(blob[8 + n :])
    return _digest(parts)


def run(size_gb: float, files: int, curve: Sequence[int], verify: bool) -> dict[str, Any]:
    """The whole benchmark in a temporary directory; returns its figures."""
    with tempfile.TemporaryDirectory(prefix="prov-bench-streamer-") as tmp:
        paths = write_checkpoint(Path(tmp), int(size_gb * 1e9), files)
        rows: list[Row] = []
        with ranged_gets_read_the_range(), local_s3(paths) as s3:
            rows.append(s3_sequential(s3, paths, verify))
            for c in curve:
                rows.append(s3_ranged(s3, paths, c, verify))
            for c in curve:
                rows.append(runai_s3(paths, c, verify))
                if rows[-1].error:
                    break  # the same error at every concurrency
        rows.append(local_sequential(paths, verify))  # page cache warm, like runai-local
        for c in curve:
            rows.append(runai_local(paths, c, verify))
            if rows[-1].error:
                break
        file_digest = _digest([p.read_bytes() for p in paths]) if verify else None
        data_digest = tensor_digest(paths) if verify else None
        total = sum(p.stat().st_size for p in paths)
    return {
        "checkpoint_bytes": total,
        "files": files,
        "cpus": os.cpu_count(),
        "file_digest": file_digest,
        "tensor_digest": data_digest,
        "rows": [{**asdict(r), "gb_per_s": r.gb_per_s} for r in rows],
        "note": "code path on this machine (moto on loopback), not AWS S3",
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"checkpoint {result['checkpoint_bytes'] / 1e9:.2f} GB in {result['files']} shards, "
        f"{result['cpus']} CPUs; {result['note']}",
        f"{'method':<18}{'conc':>5}{'GB':>8}{'s':>8}{'GB/s':>8}",
    ]
    for r in result["rows"]:
        conc = "" if r["concurrency"] is None else str(r["concurrency"])
        if r["error"]:
            lines.append(f"{r['method']:<18}{conc:>5}  error: {r['error']}")
            continue
        lines.append(
            f"{r['method']:<18}{conc:>5}{r['bytes'] / 1e9:8.2f}{r['seconds']:8.2f}"
            f"{r['gb_per_s']:8.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=3.0, help="checkpoint size (default 3)")
    ap.add_argument("--files", type=int, default=4, help="shards (default 4)")
    ap.add_argument("--concurrency", default="1,2,4,8,16,32", help="the curve, comma-separated")
    ap.add_argument("--verify", action="store_true", help="check every path's bytes (slower)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    try:
        curve = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        ap.error(f"--concurrency {args.concurrency!r}: comma-separated integers")
    if not curve or min(curve) < 1 or args.size_gb <= 0 or args.files < 1:
        ap.error("--size-gb > 0, --files >= 1 and concurrencies >= 1 are required")
    result = run(args.size_gb, args.files, curve, args.verify)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
