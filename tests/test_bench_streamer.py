"""Smoke test of benchmarks/bench_streamer.py on a small checkpoint (the full run is by hand).

Every read path must return the checkpoint's exact bytes: the plain paths the file bytes, the
streamer the tensor data (file order). The streamer rows need the optional ``streamer`` extra
(runai-model-streamer pulls torch); without it their test is skipped, saying why.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_streamer as bench

MIB = 1024 * 1024


def test_the_generated_checkpoint_is_valid_safetensors(tmp_path: Path) -> None:
    paths = bench.write_checkpoint(tmp_path, 64 * MIB, 2)
    assert [p.name for p in paths] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    for p in paths:
        blob = p.read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        assert (8 + n) % 8 == 0  # data aligned
        header = json.loads(blob[8 : 8 + n])
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        assert len(tensors) == 2  # 32 MiB per shard of 16 MiB tensors
        end = 0
        for meta in tensors.values():
            rows, cols = meta["shape"]
            begin, stop = meta["data_offsets"]
            assert meta["dtype"] == "F16" and begin == end
            assert stop - begin == rows * cols * 2 == bench.BLOCK
            end = stop
        assert len(blob) - 8 - n == end == bench.tensor_bytes(p)


def test_ranged_gets_read_only_the_range_and_the_patch_is_undone(tmp_path: Path) -> None:
    from moto.s3.models import FakeKey

    original = FakeKey.value
    paths = bench.write_checkpoint(tmp_path, 16 * MIB, 1)
    data = paths[0].read_bytes()
    with bench.ranged_gets_read_the_range(), bench.local_s3(paths) as s3:
        key = f"model/{paths[0].name}"
        last = len(data) - 1
        for begin, end in [(0, 99), (5 * MIB, 13 * MIB - 1), (last - 10, last + 500)]:
            body = s3.get_object(Bucket=bench.BUCKET, Key=key, Range=f"bytes={begin}-{end}")
            assert body["Body"].read() == data[begin : end + 1]
        assert s3.get_object(Bucket=bench.BUCKET, Key=key)["Body"].read() == data
    assert FakeKey.value is original


def test_every_plain_path_returns_the_checkpoint(tmp_path: Path) -> None:
    result = bench.run(0.07, 2, [1, 3], verify=True)
    rows = {(r["method"], r["concurrency"]): r for r in result["rows"]}
    # 2 shards of 2 x 16 MiB tensors, plus each shard's 8-byte length and JSON header
    assert 4 * bench.BLOCK < result["checkpoint_bytes"] < 4 * bench.BLOCK + 2 * 1024
    for method in [("local-sequential", None), ("s3-sequential", 1), ("s3-ranged", 1),
                   ("s3-ranged", 3)]:  # fmt: skip
        row = rows[method]
        assert row["error"] is None
        assert row["digest"] == result["file_digest"], method
        assert row["bytes"] == result["checkpoint_bytes"]
        assert row["gb_per_s"] == pytest.approx(row["bytes"] / row["seconds"] / 1e9)
    assert "not AWS" in result["note"]
    assert "not AWS S3" in bench.table(result)


def test_the_streamer_returns_the_tensors_from_s3_and_disk(tmp_path: Path) -> None:
    pytest.importorskip("runai_model_streamer", reason="optional extra 'streamer' not installed")
    pytest.importorskip("runai_model_streamer_s3", reason="optional extra 'streamer' not installed")
    result = bench.run(0.07, 2, [1, 4], verify=True)
    rows = [r for r in result["rows"] if r["method"].startswith("runai")]
    assert [(r["method"], r["concurrency"]) for r in rows] == [
        ("runai-s3", 1), ("runai-s3", 4), ("runai-local", 1), ("runai-local", 4),
    ]  # fmt: skip
    for r in rows:
        assert r["error"] is None, r
        assert r["digest"] == result["tensor_digest"]
        assert r["bytes"] == 4 * bench.BLOCK


def test_main_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bench.main(["--concurrency", "a,b"])
    assert e.value.code == 2
    assert "--concurrency 'a,b'" in capsys.readouterr().err
