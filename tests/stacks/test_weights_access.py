"""--weights s3: the stack grants the GPU nodes read access to the weights' prefix and nothing
more. The policy comes from provisioner/fleet.py (WEIGHTS_READ_CALLS); here the one the mocked
stack registers is loaded into a moto server with IAM enforcement and the calls vLLM's streamer
makes (list the prefix, HEAD and ranged GETs) are tried against it, allowed and refused."""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack_harness import ONE_NODE, StackRun, quote, run_stack

from provisioner import fleet
from stacks.options import DeployOptions

sys.path.insert(0, str(Path(__file__).parents[1] / "daemon"))
from daemon_harness import moto_server

BUCKET, PREFIX = "prov-weights-use2", "kimi/int4"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StackRun]:
    tmp = tmp_path_factory.mktemp("weights_access")
    aws = [a for a in ONE_NODE if a not in ("--weights", "hub")]  # the s3 default
    assert "--weights" not in aws
    plan = quote(tmp, "s3", [*aws, "--cloud", "aws", "--region", "us-east-2"])
    return {
        "s3": run_stack(plan, DeployOptions(weights_bucket=f"s3://{BUCKET}/{PREFIX}")),
        "hub": run_stack(plan, DeployOptions(weights="hub")),
        "fill": run_stack(
            plan, DeployOptions(weights_bucket=f"s3://{BUCKET}/{PREFIX}", fill_weights=True)
        ),
    }


def weights_policy(run: StackRun) -> tuple[dict[str, Any], str]:
    found = [r for r in run.of("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("weights-read")]
    assert len(found) == 1
    return json.loads(found[0].inputs["policy"]), found[0].inputs["role"]


def test_the_gpu_nodes_role_reads_the_prefix_only(runs: dict[str, StackRun]) -> None:
    policy, role = weights_policy(runs["s3"])
    gpu_role = runs["s3"].one("aws:iam/role:Role", next(
        r.name for r in runs["s3"].of("aws:iam/role:Role") if r.name.endswith("-gpu-node")
    ))  # fmt: skip
    assert role == f"{gpu_role.name}-id"  # the GPU nodes' role, not the system pool's
    assert policy == fleet.weights_read_policy(BUCKET, PREFIX)  # generated, not hand-written
    actions = sorted(a for st in policy["Statement"] for a in st["Action"])
    assert actions == ["s3:GetObject", "s3:ListBucket"]
    assert {st["Resource"] for st in policy["Statement"]} == {
        f"arn:aws:s3:::{BUCKET}",
        f"arn:aws:s3:::{BUCKET}/{PREFIX}/*",
    }
    listing = next(st for st in policy["Statement"] if st["Action"] == ["s3:ListBucket"])
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [PREFIX, f"{PREFIX}/*"]}}
    assert not [r for r in runs["hub"].of("aws:iam/rolePolicy:RolePolicy")
                if r.name.endswith("weights-read")]  # fmt: skip


def _auth(url: str, body: bytes) -> None:
    req = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(req, timeout=10).read()


@contextlib.contextmanager
def enforced(url: str) -> Iterator[None]:
    _auth(url, b"0")
    try:
        yield
    finally:
        _auth(url, b"inf")


def _s3_client_of(
    root: Any, url: str, policies: dict[str, dict[str, Any]], user: str = "gpu-node"
) -> Any:
    """An S3 client of a new IAM user holding exactly `policies` (name -> document), as the
    role under test would (the GPU nodes' by default)."""
    import boto3

    iam = root.client("iam", endpoint_url=url)
    iam.create_user(UserName=user)
    for name, doc in policies.items():
        iam.put_user_policy(UserName=user, PolicyName=name, PolicyDocument=json.dumps(doc))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return boto3.session.Session(
        key["AccessKeyId"], key["SecretAccessKey"], region_name="us-east-2"
    ).client("s3", endpoint_url=url)


def _refused(call: Any, **kw: Any) -> bool:
    """True when the call is refused with an access error (any other outcome: False)."""
    from botocore.exceptions import ClientError

    try:
        call(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"] in ("AccessDenied", "403")
    return False


def test_the_policy_allows_the_streamers_reads_and_nothing_else(
    runs: dict[str, StackRun],
) -> None:
    import boto3

    policy, _ = weights_policy(runs["s3"])
    with moto_server() as url:
        _auth(url, b"inf")
        root = boto3.session.Session("testing", "testing", region_name="us-east-2")
        admin = root.client("s3", endpoint_url=url)
        for bucket in (BUCKET, "someone-elses"):
            admin.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-east-2"}
            )
        admin.put_object(Bucket=BUCKET, Key=f"{PREFIX}/model-00001.safetensors", Body=b"x" * 64)
        admin.put_object(Bucket=BUCKET, Key="other/secret.bin", Body=b"s")
        admin.put_object(Bucket="someone-elses", Key=f"{PREFIX}/a", Body=b"s")
        node = _s3_client_of(root, url, {"weights": policy})

        with enforced(url):
            listed = node.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
            assert [o["Key"] for o in listed["Contents"]] == [f"{PREFIX}/model-00001.safetensors"]
            key0 = f"{PREFIX}/model-00001.safetensors"
            assert node.head_object(Bucket=BUCKET, Key=key0)["ContentLength"] == 64
            got = node.get_object(Bucket=BUCKET, Key=key0, Range="bytes=0-7")["Body"].read()
            assert got == b"x" * 8
            assert _refused(node.get_object, Bucket=BUCKET, Key="other/secret.bin")
            assert _refused(node.get_object, Bucket="someone-elses", Key=f"{PREFIX}/a")
            assert _refused(node.put_object, Bucket=BUCKET, Key=f"{PREFIX}/x", Body=b"w")
            assert _refused(node.delete_object, Bucket=BUCKET, Key=key0)
            assert _refused(node.list_objects_v2, Bucket="someone-elses")
            # listing another prefix of the bucket: refused by the s3:prefix condition on AWS;
            # moto does not evaluate condition keys, so that part is checked in the document

        # the fill Job's role (--fill-weights): writes the prefix, multipart included, no more
        fill_policy = json.loads(runs["fill"].one("aws:iam/rolePolicy:RolePolicy",
                                 "kimi-k2-thinking-weights-fill").inputs["policy"])  # fmt: skip
        filler = _s3_client_of(root, url, {"fill": fill_policy}, user="fill")
        with enforced(url):
            filler.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
            part = f"{PREFIX}/model-00002.safetensors"
            up = filler.create_multipart_upload(Bucket=BUCKET, Key=part)["UploadId"]
            etag = filler.upload_part(
                Bucket=BUCKET, Key=part, UploadId=up, PartNumber=1, Body=b"y" * 16
            )["ETag"]
            filler.complete_multipart_upload(
                Bucket=BUCKET, Key=part, UploadId=up,
                MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]},
            )  # fmt: skip
            assert _refused(filler.put_object, Bucket=BUCKET, Key="other/x", Body=b"w")
            assert _refused(filler.put_object, Bucket="someone-elses", Key=f"{PREFIX}/x", Body=b"w")
            assert _refused(filler.get_object, Bucket=BUCKET, Key=part)
        assert admin.head_object(Bucket=BUCKET, Key=part)["ContentLength"] == 16


def test_the_daemon_prewarms_when_a_replacement_cannot_beat_the_notice(
    runs: dict[str, StackRun],
) -> None:
    # one p5en/p5e-class node of Kimi int4: docs/recovery.md's s3 column sums to 405 s and the
    # hub column to 1,658 s, both above AWS's 120 s notice -> start it on the rebalance signal
    market = runs["s3"].outputs["plan"][0]
    assert " spot " in market, market  # the prewarm applies to spot pools only
    for path in ("s3", "hub"):
        dep = runs[path].one("kubernetes:apps/v1:Deployment", "prov-daemon").inputs
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--prewarm-on-rebalance" in args, (path, args)


def test_the_fill_job_writes_through_its_own_service_account(runs: dict[str, StackRun]) -> None:
    run = runs["fill"]
    assoc = run.one("aws:eks/podIdentityAssociation:PodIdentityAssociation",
                    "kimi-k2-thinking-weights-fill").inputs  # fmt: skip
    assert (assoc["namespace"], assoc["serviceAccount"]) == ("default", "prov-weights-fill")
    assert assoc["roleArn"].endswith("role/kimi-k2-thinking-weights-fill")
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy",
                                "kimi-k2-thinking-weights-fill").inputs["policy"])  # fmt: skip
    assert policy == fleet.weights_fill_policy(BUCKET, PREFIX)
    # the vLLM pods' node role stays read-only
    read, _ = weights_policy(run)
    assert not {a for st in read["Statement"] for a in st["Action"]} - {
        "s3:GetObject",
        "s3:ListBucket",
    }
    jobs = run.of("kubernetes:batch/v1:Job")
    assert [j.inputs["metadata"]["name"] for j in jobs] == ["kimi-k2-thinking-weights-fill"]


def test_the_compile_cache_is_writable_and_the_weights_stay_read_only(
    runs: dict[str, StackRun],
) -> None:
    """The GPU nodes' role with both of the stack's policies (weights read, compile cache), as
    AWS would evaluate them together: the cache's init container and sidecar (`aws s3 sync`
    down: list + get, up: list + put) work on cache/PREFIX; nothing can write the weights."""
    import boto3

    run = runs["s3"]
    read, _ = weights_policy(run)
    found = run.one("aws:iam/rolePolicy:RolePolicy", "kimi-k2-thinking-compile-cache")
    cache_policy = json.loads(found.inputs["policy"])
    cache = f"cache/{PREFIX}"
    assert cache_policy == fleet.compile_cache_policy(BUCKET, cache)
    with moto_server() as url:
        _auth(url, b"inf")
        # moto's backends live in the process: start from an empty account
        reset = urllib.request.Request(f"{url}/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(reset, timeout=10).read()
        root = boto3.session.Session("testing", "testing", region_name="us-east-2")
        admin = root.client("s3", endpoint_url=url)
        admin.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-east-2"}
        )
        admin.put_object(Bucket=BUCKET, Key=f"{PREFIX}/model.safetensors", Body=b"w")
        admin.put_object(Bucket=BUCKET, Key=f"{cache}/torch_compile_cache/h/rank_0_0/a", Body=b"c")
        node = _s3_client_of(root, url, {"weights": read, "cache": cache_policy})

        with enforced(url):
            listed = node.list_objects_v2(Bucket=BUCKET, Prefix=f"{cache}/")
            (entry,) = [o["Key"] for o in listed["Contents"]]
            assert node.get_object(Bucket=BUCKET, Key=entry)["Body"].read() == b"c"
            node.put_object(
                Bucket=BUCKET, Key=f"{cache}/torch_compile_cache/h/rank_1_0/a", Body=b"n"
            )
            assert node.get_object(Bucket=BUCKET, Key=f"{PREFIX}/model.safetensors")["Body"].read()
            assert _refused(
                node.put_object, Bucket=BUCKET, Key=f"{PREFIX}/model.safetensors", Body=b"x"
            )
            assert _refused(node.put_object, Bucket=BUCKET, Key="cache/other/x", Body=b"x")
            assert _refused(node.delete_object, Bucket=BUCKET, Key=entry)
        assert (
            admin.get_object(Bucket=BUCKET, Key=f"{PREFIX}/model.safetensors")["Body"].read()
            == b"w"
        )
