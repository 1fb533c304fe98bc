"""DeploySpec and the stack config round trip (what prov deploy writes, the program reads)."""

from __future__ import annotations

import pytest
from stack_harness import PlanFile

from provisioner.contract.document import PlanDocument
from provisioner.errors import UsageError
from stacks.options import DeployOptions
from stacks.spec import build_spec, plan_config, release_name, select_plan


@pytest.mark.parametrize(
    ("model_id", "name"),
    [
        ("moonshotai/Kimi-K2-Thinking", "kimi-k2-thinking"),
        ("meta-llama/Llama-3.1-8B", "llama-3-1-8b"),
        ("Qwen/Qwen3-235B-A22B", "qwen3-235b-a22b"),
        ("org/7b-chat", "m-7b-chat"),  # a DNS-1035 label starts with a letter
    ],
)
def test_release_name(model_id: str, name: str) -> None:
    assert release_name(model_id) == name


def test_options_round_trip_through_stack_config() -> None:
    options = DeployOptions(
        rank=3,
        target="kubeconfig",
        name="kimi",
        namespace="serving",
        public=True,
        drain_seconds=240,
        image="vllm/vllm-openai:v0.19.1",
        kube_context="gpu",
    )
    config = options.to_config()
    assert all(k.startswith("prov:") and isinstance(v, str) for k, v in config.items())
    assert DeployOptions.from_config(lambda key: config.get(f"prov:{key}")) == options
    assert DeployOptions.from_config(lambda key: None) == DeployOptions()


def test_plan_config_keeps_only_the_chosen_plan(plans: dict[str, PlanFile]) -> None:
    doc = plans["one"].doc
    assert len(doc.plans) == 10 and doc.rejected
    kept = PlanDocument.model_validate_json(plan_config(doc, 3))
    assert [p.rank for p in kept.plans] == [3]
    assert kept.plans[0] == select_plan(doc, 3)
    assert kept.rejected == [] and kept.model == doc.model and kept.request == doc.request


def test_rank_message_names_the_ranks_the_file_has(plans: dict[str, PlanFile]) -> None:
    with pytest.raises(
        UsageError, match=r"--rank 11: no such plan in the file \(it has ranks 1..10\)"
    ):
        select_plan(plans["one"].doc, 11)


def test_multi_node_pool_stays_in_the_plans_zone(plans: dict[str, PlanFile]) -> None:
    spec = build_spec(plans["two_aws"].doc, DeployOptions())
    assert spec.multi_node and spec.zones == ("use2-az3",)
    assert spec.vpc_zones == ("use2-az3", "use2-az1")  # EKS wants two zones
    one = build_spec(plans["one_aws"].doc, DeployOptions())
    assert not one.multi_node and len(one.zones) == 3


def test_edited_vllm_args_that_contradict_the_shape_are_refused(
    plans: dict[str, PlanFile],
) -> None:
    data = plans["one"].doc.model_dump(mode="json")
    tp = data["plans"][0]["tp"]
    args = data["plans"][0]["vllm_args"]
    args[args.index("--tensor-parallel-size") + 1] = "3"  # no 8-GPU shape has TP3
    with pytest.raises(UsageError, match=f"--tensor-parallel-size 3 but the plan says {tp}"):
        build_spec(PlanDocument.model_validate(data), DeployOptions())


def test_edited_max_model_len_is_refused_without_the_planner(plans: dict[str, PlanFile]) -> None:
    """The stack's own check (it runs when the model cannot be re-checked): the flag vLLM
    gets must be the request's context, 128k = 131,072 tokens."""
    data = plans["one"].doc.model_dump(mode="json")
    args = data["plans"][0]["vllm_args"]
    args[args.index("--max-model-len") + 1] = "1000000"
    with pytest.raises(UsageError, match="--max-model-len 1000000 but the plan says 131072"):
        build_spec(PlanDocument.model_validate(data), DeployOptions())
