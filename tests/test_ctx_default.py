"""One --ctx default for quote, fit and models show (review7 #15), and the ctx deploy starts
vLLM with is the plan's.

Hand derivations: 32k = 32 x 1024 = 32,768 tokens. Kimi K2's MLA caches 512 + 64 latent values
per layer x 61 layers x 2 B = 70,272 B/token (its config.json), so one 32,768-token request is
70,272 x 32,768 = 2,302,672,896 B = 2.30 GB. Llama-2-7B's config.json (meta-llama/Llama-2-7b-hf)
has max_position_embeddings 4096: vLLM refuses a longer --max-model-len, so the default is 4096.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from provisioner.cli.main import app

ENV = {"COLUMNS": "80"}

# meta-llama/Llama-2-7b-hf config.json (the fields prov reads)
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "torch_dtype": "float16",
    "tie_word_embeddings": False,
}


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def test_quote_fit_and_models_show_default_to_the_same_32k() -> None:
    quote = run("quote", "-m", "kimi-k2-thinking", "--gpu", "H200", "--top", "2", "--json")
    assert quote.exit_code == 0, quote.output
    doc = json.loads(quote.stdout)
    assert doc["request"]["ctx"] == 32768
    for p in doc["plans"]:  # what deploy starts vLLM with
        args = p["vllm_args"]
        assert args[args.index("--max-model-len") + 1] == "32768"

    fit = run("fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "--tp", "8", "--json")
    assert fit.exit_code == 0, fit.output
    assert json.loads(fit.stdout)["max_model_len"] == 32768
    assert any(n.startswith("--ctx not given: 32,768") for n in json.loads(fit.stdout)["notes"])

    show = run("models", "show", "kimi-k2-thinking")
    assert show.exit_code == 0, show.output
    assert "one 32,768-token request = 2.30 GB" in show.stdout


def test_each_output_says_the_ctx_and_that_it_was_the_default() -> None:
    quote = run("quote", "-m", "kimi-k2-thinking", "--gpu", "H200", "--top", "2")
    assert "ctx 32k (32,768 tokens), KV" in quote.stdout
    assert "@32k" in quote.stdout
    # Kimi K2's config.json: max_position_embeddings 262144
    note = "--ctx not given: 32,768 tokens, prov's default; the model takes up to 262,144"
    assert f"note: {note}" in " ".join(quote.stdout.split())
    doc = run("quote", "-m", "kimi-k2-thinking", "--gpu", "H200", "--top", "2", "--json")
    assert any(n.startswith(note) for n in json.loads(doc.stdout)["notes"])
    given = run("quote", "-m", "kimi-k2-thinking", "--gpu", "H200", "--top", "2", "--ctx", "32k")
    assert "--ctx not given" not in given.stdout

    fit = run("fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "--tp", "8")
    assert "max_model_len 32,768" in fit.stdout
    assert note in " ".join(fit.stdout.split())
    show = " ".join(run("models", "show", "kimi-k2-thinking").stdout.split())
    assert "Note: --ctx not given: 32,768 tokens" in show


@pytest.mark.parametrize(
    "argv",
    [["quote", "--help"], ["fit", "--help"], ["models", "show", "--help"]],
)
def test_every_help_states_the_default(argv: list[str]) -> None:
    result = run(*argv)
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "Default: 32k, or the model's max_position_embeddings when shorter" in text


def test_a_model_shorter_than_32k_defaults_to_its_own_maximum(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA2_7B))
    quote = run("quote", "-m", str(cfg), "--gpu", "H100", "--top", "1", "--json")
    assert quote.exit_code == 0, quote.output
    assert json.loads(quote.stdout)["request"]["ctx"] == 4096
    fit = run("fit", "-m", str(cfg), "--gpu", "H100", "--json")
    assert fit.exit_code == 0, fit.output
    assert json.loads(fit.stdout)["max_model_len"] == 4096
    show = run("models", "show", str(cfg))
    assert "one 4,096-token request" in show.stdout
    assert "4,096 tokens, the model's max_position_embeddings" in " ".join(show.stdout.split())
