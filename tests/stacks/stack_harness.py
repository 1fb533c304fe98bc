"""Helpers for tests/stacks: plans from the real planner, the Pulumi program under mocks.

The plan files come from `prov quote ... --json` (in-process CliRunner), never hand-written.
`run_stack` runs stacks.program.program with the stack config prov deploy writes, under
pulumi.runtime.set_mocks: every resource registration reaches RecordingMocks, which keeps its
type, name, inputs and provider, and answers with plausible outputs (ids, ARNs, an endpoint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.contract.document import PlanDocument, load_plan_document
from stacks.options import DeployOptions
from stacks.spec import plan_config

# --weights hub: today's download path; the s3 path is tested in tests/stacks/test_weights.py
KIMI = ["quote", "--model", "moonshotai/Kimi-K2-Thinking", "--ctx", "128k", "--json"]
KIMI += ["--weights", "hub"]
# TP x PP plans (DP/EP plans: test_vllm_argv.py)
ONE_NODE = [*KIMI, "--gpu", "H200", "--layout", "tp"]  # one node of 8 x H200
TWO_NODE = [*KIMI, "--gpu", "H100-SXM", "--nodes", "2", "--market", "spot", "--layout", "tp"]
ACCOUNT = "123456789012"
API_KEY = "test-api-key"
HF_TOKEN = "hf_test_token"


@dataclass(frozen=True)
class PlanFile:
    path: Path
    doc: PlanDocument


def quote(tmp: Path, name: str, args: list[str]) -> PlanFile:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    path = tmp / f"{name}.json"
    path.write_text(result.stdout, encoding="utf-8")
    return PlanFile(path, load_plan_document(path))


class RecordingMocks(pulumi.runtime.Mocks):
    """Keeps every registration; answers with inputs plus the outputs the stacks read."""

    def __init__(self, buckets: frozenset[str] = frozenset()) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.buckets = buckets  # S3 buckets that exist already (aws.s3.get_bucket finds them)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ.startswith("aws:"):
            kind = args.typ.rsplit(":", 1)[-1].lower()
            state.setdefault("name", args.name)
            state["arn"] = f"arn:aws:{kind}:us-east-2:{ACCOUNT}:{kind}/{args.name}"
        if args.typ == "aws:eks/cluster:Cluster":
            state["arn"] = f"arn:aws:eks:us-east-2:{ACCOUNT}:cluster/{args.name}"
            state["endpoint"] = "https://ABC.gr7.us-east-2.eks.amazonaws.com"
            state["certificateAuthority"] = {"data": "Y2EtZGF0YQ=="}
            state["vpcConfig"] = {**state["vpcConfig"], "clusterSecurityGroupId": "sg-cluster"}
        if args.typ == "aws:sqs/queue:Queue":
            state["url"] = f"https://sqs.us-east-2.amazonaws.com/{ACCOUNT}/{args.name}"
            state["arn"] = f"arn:aws:sqs:us-east-2:{ACCOUNT}:{args.name}"
        if args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            state["latestVersion"] = 1
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> Any:
        """The two lookups the stack makes for the bucket it creates: who am I, does it exist.
        A missing bucket is an invoke failure, as the AWS provider reports it."""
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            arn = f"arn:aws:iam::{ACCOUNT}:user/deployer"
            return {"accountId": ACCOUNT, "arn": arn, "userId": "AIDATEST", "id": ACCOUNT}
        if args.token == "aws:s3/getBucket:getBucket":
            name = args.args["bucket"]
            if name in self.buckets:
                return {"bucket": name, "arn": f"arn:aws:s3:::{name}", "id": name}
            return {}, [("bucket", f"couldn't find resource: NoSuchBucket {name}")]
        raise AssertionError(f"unexpected provider call {args.token}")


class RecordingMonitor(MockMonitor):
    """Also keeps the options mocks do not see: which resources are retained on delete."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.retained: set[str] = set()
        self.depends: dict[str, list[str]] = {}  # name -> names of its explicit dependencies

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method's name
        if request.retainOnDelete:
            self.retained.add(request.name)
        self.depends[request.name] = [u.rsplit("::", 1)[-1] for u in request.dependencies]
        return super().RegisterResource(request)


@dataclass
class StackRun:
    resources: list[pulumi.runtime.MockResourceArgs]
    urns: list[str]  # parent chain in the type part: prov:k8s:VllmService$kubernetes:...
    outputs: dict[str, tuple[Any, bool]]  # stack output -> (value, is it a secret)
    retained: frozenset[str] = frozenset()  # names of resources with retainOnDelete
    depends: dict[str, list[str]] | None = None  # name -> its dependencies' names

    def of(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str | None = None) -> pulumi.runtime.MockResourceArgs:
        found = [r for r in self.of(typ) if name is None or r.name == name]
        assert len(found) == 1, (typ, name, [r.name for r in self.of(typ)])
        return found[0]


def run_stack(
    plan: PlanFile,
    options: DeployOptions,
    *,
    hf_token: str | None = None,
    buckets: frozenset[str] = frozenset(),
) -> StackRun:
    from stacks.program import stack_outputs

    mocks = RecordingMocks(buckets)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="prov", stack="test", preview=False, monitor=monitor)
    config = {
        **options.to_config(),
        "prov:plan": plan_config(plan.doc, options.rank),
        "prov:apiKey": API_KEY,
    }
    secret_keys = ["prov:apiKey"]
    if hf_token is not None:
        config["prov:hfToken"] = hf_token
        secret_keys.append("prov:hfToken")
    pulumi.runtime.set_all_config(config, secret_keys)

    outputs: dict[str, tuple[Any, bool]] = {}

    @pulumi.runtime.test
    def run() -> Any:
        built = stack_outputs()

        async def resolve() -> None:
            for key, value in built.items():
                out = pulumi.Output.from_input(value)
                outputs[key] = (await out.future(), await out.is_secret())

        return resolve()

    run()
    return StackRun(
        mocks.resources,
        list(monitor.get_registered_resources()),
        outputs,
        frozenset(monitor.retained),
        monitor.depends,
    )


def numbers_as_ints(value: Any) -> Any:
    """Pulumi's wire format turns ints into floats; undo that to compare with a manifest."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: numbers_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers_as_ints(v) for v in value]
    return value


def without_secrets(value: Any) -> Any:
    """Inputs with every Pulumi-secret value replaced: what a state file shows in clear."""
    if rpc.is_rpc_secret(value):
        return "[secret]"
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


# ---- rendered manifests, parsed back with the official kubernetes client's models ----------


def k8s_model(obj: dict[str, Any], klass: str) -> Any:
    """Deserialize a manifest dict into a kubernetes.client model, as the client would a reply.

    The models drop keys they do not know, so the round trip must give the dict back: a
    misspelt field (terminationGracePeriodSecond) fails here.
    """
    from kubernetes.client import ApiClient

    client = ApiClient()
    model = client.deserialize(json.dumps(obj), klass, "application/json")
    assert client.sanitize_for_serialization(model) == obj, f"{klass}: unknown or mistyped keys"
    return model
