"""The registry of model families: dispatch by model_type, refusals, and a family outside the
catalog counted against its published size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.core.families import KNOWN_UNSUPPORTED, REGISTERED, Family, family_of
from provisioner.core.models import parse_config
from provisioner.errors import ConfigError

CATALOG = Path(__file__).resolve().parents[1] / "provisioner" / "data" / "models"

# The refusal text as prov printed it before the registry (the if/elif's hand-written list).
SUPPORTED_BEFORE = (
    "llama/mistral/qwen2/qwen3/seed_oss (dense GQA), qwen2_moe/qwen3_moe, mixtral, "
    "deepseek_v2/v3 and kimi_k2 (MLA MoE), gpt_oss, llama4, glm4_moe"
)


def test_each_model_type_is_read_by_one_family() -> None:
    types = [mt for f in REGISTERED for mt in f.model_types]
    assert len(types) == len(set(types))
    assert len({f.name for f in REGISTERED}) == len(REGISTERED)
    assert not set(types) & set(KNOWN_UNSUPPORTED)


@pytest.mark.parametrize("family", REGISTERED, ids=lambda f: f.name)
def test_dispatch_by_model_type(family: Family) -> None:
    for mt in family.model_types:
        assert family_of({"model_type": mt}) is family
        assert family_of({"model_type": mt.upper()}) is family  # model_type is case-blind


def test_every_catalog_model_has_a_registered_family() -> None:
    seen = set()
    for path in CATALOG.glob("*.json"):
        cfg = json.loads(path.read_text())
        seen.add(parse_config(cfg, path.stem).family)
    assert seen == {f.name for f in REGISTERED}  # the catalog exercises every family


@pytest.mark.parametrize(
    ("model_type", "start"),
    [
        ("bert", "unsupported model_type 'bert' (architectures: BertModel); "),
        ("qwen3_next", "model_type 'qwen3_next' is Qwen3-Next (hybrid Gated-DeltaNet + attention)"),
        ("mamba2", "model_type 'mamba2' is Mamba2 (SSM), which prov cannot model yet; "),
    ],
)
def test_refusals_name_the_supported_families(model_type: str, start: str) -> None:
    with pytest.raises(ConfigError) as err:
        family_of({"model_type": model_type, "architectures": ["BertModel"]})
    message = str(err.value)
    assert message.startswith(start)
    assert message.endswith(f"supported families: {SUPPORTED_BEFORE}")


def test_missing_model_type_with_mla_fields_reads_as_deepseek() -> None:
    assert family_of({"kv_lora_rank": 512}).name == "deepseek_v3"
    with pytest.raises(ConfigError, match=r"'\(missing\)' \(architectures: none\)"):
        family_of({})


def test_qwen2_moe_outside_the_catalog_matches_its_published_size() -> None:
    """Qwen1.5-MoE-A2.7B (model_type qwen2_moe), config.json as published on the Hub.

    The Qwen team's release post: 14.3B parameters in total, 2.7B activated. By hand: embed and
    lm_head 2 x 151,936 x 2,048 = 622.3M; per layer attention 4 x 2,048^2 = 16.8M, 60 routed
    experts x 3 x 2,048 x 1,408 = 519.0M, one shared expert 3 x 2,048 x 5,632 = 34.6M, router
    0.12M: 570.5M x 24 = 13.69B; total 14.31B; active 14.31 - 12.46 + 12.46 x 4/60 = 2.69B.
    """
    cfg = {
        "model_type": "qwen2_moe",
        "architectures": ["Qwen2MoeForCausalLM"],
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "num_hidden_layers": 24,
        "num_experts": 60,
        "num_experts_per_tok": 4,
        "decoder_sparse_step": 1,
        "max_position_embeddings": 8192,
        "vocab_size": 151936,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    spec = parse_config(cfg, "Qwen/Qwen1.5-MoE-A2.7B")
    assert spec.family == "qwen_moe"
    assert spec.moe is not None and spec.moe.n_shared_experts == 1
    assert spec.params_total == pytest.approx(14.3e9, rel=0.01)
    assert spec.params_active == pytest.approx(2.7e9, rel=0.01)
