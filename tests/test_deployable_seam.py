"""The seam between quote and deploy: a plan is marked deployable exactly when `prov deploy`
(stacks/spec.build_spec, default options) accepts it. Both sides run here, on real quotes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.contract.document import PlanDocument
from provisioner.errors import UsageError
from stacks.options import DeployOptions
from stacks.spec import build_spec

QUOTES = {
    "kimi-every-vendor": [
        "--model",
        "moonshotai/Kimi-K2-Thinking",
        "--quant",
        "int4",
        "--ctx",
        "128k",
    ],
    "gpt-oss-aws": ["--model", "openai/gpt-oss-120b", "--ctx", "64k", "--cloud", "aws"],
    "llama-gguf": ["--model", "meta-llama/Llama-3.1-70B", "--quant", "q4_k_m", "--ctx", "8k"],
    "llama-every-cloud": ["--model", "meta-llama/Llama-3.1-70B", "--ctx", "8k", "--max-nodes", "1"],
    # review9 #2: a scheme the published checkpoint is not, nor becomes at load time
    "kimi-fp8": ["--model", "moonshotai/Kimi-K2-Thinking", "--quant", "fp8", "--ctx", "32k"],
    # ... and one vLLM makes at load time (bf16 checkpoint -> --quantization fp8)
    "llama-online-fp8": ["--model", "meta-llama/Llama-3.1-70B", "--quant", "fp8", "--ctx", "8k"],
}
NONE_DEPLOYABLE = {"llama-gguf", "kimi-fp8"}


@pytest.mark.parametrize(("name", "args"), QUOTES.items(), ids=QUOTES.keys())
def test_deployable_iff_deploy_accepts(name: str, args: list[str]) -> None:
    result = CliRunner().invoke(app, ["quote", *args, "--top", "40", "--json"])
    assert result.exit_code == 0, result.output
    doc = PlanDocument.model_validate(json.loads(result.stdout))
    marks = []
    for p in doc.plans:
        try:
            build_spec(doc, DeployOptions(rank=p.rank, weights="hub"))  # the bucket is an option
            accepted = True
        except UsageError as e:
            accepted = False
            assert p.not_deployable_reason and p.not_deployable_reason in str(e)
        assert p.deployable is accepted, (p.rank, p.cloud, p.gpu, p.not_deployable_reason)
        marks.append(accepted)
    # each quote above exercises the rule: GGUF and the fp8 Kimi none, the others mostly
    assert any(marks) != (name in NONE_DEPLOYABLE)


# ---- review9 #2: the checkpoint a plan's quant scheme needs --------------------------------
# The published checkpoints (their config.json on Hugging Face, embedded in prov's catalog):
# Kimi-K2-Thinking compressed-tensors int4 W4A16 g32; gpt-oss-120b mxfp4; DeepSeek-V3 fp8
# e4m3 block 128x128; Llama-3.1-70B bfloat16, no quantization_config. vLLM v0.18.0 makes one
# format from a published checkpoint at load time: fp8 from bf16/fp16 (`--quantization fp8`,
# Fp8Config(is_checkpoint_fp8_serialized=False) in model_executor/layers/quantization/fp8.py;
# docs "Online Dynamic Quantization"). Every other pairing needs another checkpoint.
CHECKPOINTS = [
    # (model, --quant, the checkpoint the plan needs or None, the published format)
    ("moonshotai/Kimi-K2-Thinking", "fp8", "an fp8", "int4"),
    ("moonshotai/Kimi-K2-Thinking", "int8", "a W8A8 int8 (compressed-tensors)", "int4"),
    ("moonshotai/Kimi-K2-Thinking", "nvfp4", "an NVFP4 (modelopt)", "int4"),
    ("moonshotai/Kimi-K2-Thinking", "bf16", "a bf16", "int4"),
    ("openai/gpt-oss-120b", "fp8", "an fp8", "mxfp4"),
    ("openai/gpt-oss-120b", "bf16", "a bf16", "mxfp4"),
    ("deepseek-ai/DeepSeek-V3", "int4", "an AWQ/GPTQ int4", "fp8"),
    ("meta-llama/Llama-3.1-70B", "nvfp4", "an NVFP4 (modelopt)", "bf16"),
    ("meta-llama/Llama-3.1-70B", "mxfp4", "an MXFP4", "bf16"),
    ("meta-llama/Llama-3.1-70B", "int4", "an AWQ/GPTQ int4", "bf16"),
    # the published checkpoint serves these: its own format, or fp8 made at load time
    ("moonshotai/Kimi-K2-Thinking", "int4", None, "int4"),
    ("openai/gpt-oss-120b", "auto", None, "mxfp4"),
    ("deepseek-ai/DeepSeek-V3", "fp8", None, "fp8"),
    ("meta-llama/Llama-3.1-70B", "fp8", None, "bf16"),
    ("meta-llama/Llama-3.1-70B", "bf16", None, "bf16"),
]


def _quote(tmp_path: Path, model: str, quant: str, *extra: str) -> tuple[Path, dict[str, Any]]:
    args = ["quote", "--model", model, "--quant", quant, "--ctx", "8k", "--top", "5", "--json"]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    path = tmp_path / "plan.json"
    path.write_text(result.stdout, encoding="utf-8")
    return path, json.loads(result.stdout)


@pytest.mark.parametrize(("model", "quant", "needs", "published"), CHECKPOINTS)
def test_a_plan_needing_another_checkpoint_is_marked_and_refused(
    tmp_path: Path, model: str, quant: str, needs: str | None, published: str
) -> None:
    path, doc = _quote(tmp_path, model, quant)
    assert doc["plans"], doc["rejected"][:3]
    render = CliRunner().invoke(
        app, ["deploy", "--plan", str(path), "--render", str(tmp_path / "o")]
    )
    if needs is None:
        assert all(p["deployable"] for p in doc["plans"]), doc["plans"][0]["not_deployable_reason"]
        assert render.exit_code == 0, render.output
        return
    reason = (
        f"needs {needs} checkpoint of {model} (the published one is {published}); "
        "pass one with -m <config.json or snapshot folder>"
    )
    for p in doc["plans"]:  # the JSON mark, on every plan: no GPU or cloud serves it
        assert (p["deployable"], p["not_deployable_reason"]) == (False, reason)
        assert "--quantization" not in p["vllm_args"]  # nothing for vLLM to convert
    assert doc["headline"]["cheapest_deployable"] is None
    # prov deploy refuses it with the same reason, one line, exit 2, nothing written
    assert render.exit_code == 2, render.output
    assert reason in render.stderr and "Traceback" not in render.output
    assert "--quant auto" in render.stderr  # the quote that gives the published checkpoint
    assert not (tmp_path / "o").exists()
    ranked = CliRunner().invoke(
        app, ["deploy", "--plan", str(path), "--rank", "1", "--render", str(tmp_path / "o")]
    )
    assert ranked.exit_code == 2 and f"rank 1: {reason}" in ranked.stderr


def test_the_text_table_marks_them_too() -> None:
    """The headline's Deployable line and --wide's deploy column say what the JSON says."""
    args = ["quote", "-m", "kimi-k2-thinking", "-q", "fp8", "--ctx", "32k", "--top", "3"]
    result = CliRunner().invoke(app, [*args, "--wide"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    deployable = next(line for line in lines if line.startswith("Deployable:"))
    assert "needs an fp8 checkpoint of moonshotai/Kimi-K2-Thinking" in deployable
    header = next(line for line in lines if line.startswith("#"))
    col = header.split().index("deploy")
    rows = [line.split() for line in lines if line[:1].isdigit()][:3]
    assert len(rows) == 3 and all(row[col] == "no" for row in rows), rows


def test_online_fp8_carries_its_flag_and_a_hand_edit_is_caught(tmp_path: Path) -> None:
    """bf16 Llama -q fp8: deployable, with `--quantization fp8` in its vllm_args and the
    rendered manifest; a plan whose flag was removed by hand (so vLLM would load bf16 weights
    where the plan priced fp8) is refused by deploy's contract re-check."""
    path, doc = _quote(tmp_path, "meta-llama/Llama-3.1-70B", "fp8")
    plan = doc["plans"][0]
    assert plan["deployable"] is True
    args = plan["vllm_args"]
    assert args[args.index("--quantization") + 1] == "fp8"
    out = tmp_path / "out"
    rank = ["--rank", str(plan["rank"])]
    render = CliRunner().invoke(app, ["deploy", "--plan", str(path), *rank, "--render", str(out)])
    assert render.exit_code == 0, render.output
    manifest = next(out.glob("*.yaml")).read_text()
    assert "- --quantization\n" in manifest and "- fp8\n" in manifest
    cut = [a for a in args if a not in ("--quantization", "fp8")]
    doc["plans"] = [{**plan, "vllm_args": cut}]
    path.write_text(json.dumps(doc), encoding="utf-8")
    edited = CliRunner().invoke(
        app, ["deploy", "--plan", str(path), *rank, "--render", str(tmp_path / "e")]
    )
    assert edited.exit_code == 2, edited.output
    assert "vllm_args lack --quantization fp8; the file was edited by hand" in edited.stderr


def test_a_hand_flipped_mark_does_not_deploy(tmp_path: Path) -> None:
    """deploy re-derives the rule from the file's model and --quant, not from its mark."""
    path, doc = _quote(tmp_path, "moonshotai/Kimi-K2-Thinking", "fp8")
    doc["plans"] = [{**p, "deployable": True, "not_deployable_reason": None} for p in doc["plans"]]
    path.write_text(json.dumps(doc), encoding="utf-8")
    render = CliRunner().invoke(
        app, ["deploy", "--plan", str(path), "--render", str(tmp_path / "o")]
    )
    assert render.exit_code == 2
    assert "needs an fp8 checkpoint of moonshotai/Kimi-K2-Thinking" in render.stderr


def test_a_local_model_is_not_deployed_from_the_hub(tmp_path: Path) -> None:
    # -m ./folder: the plan's --model is the folder's name, which vLLM would look up on the
    # Hugging Face Hub; deploy refuses the hub path (its fallback without a bucket) and renders
    # the bucket path, where vLLM streams the uploaded folder
    folder = tmp_path / "L8"
    folder.mkdir()
    src = Path(__file__).parent.parent / "provisioner/data/models/meta-llama__Llama-3.1-8B.json"
    (folder / "config.json").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    path, _doc = _quote(tmp_path, str(folder), "auto")
    render = ["deploy", "--plan", str(path), "--render"]
    res = CliRunner().invoke(app, [*render, str(tmp_path / "a")])
    assert res.exit_code == 2, res.output
    assert "model was given as a local path" in res.output and "--weights s3" in res.output
    res = CliRunner().invoke(
        app, [*render, str(tmp_path / "b"), "--weights-bucket", "s3://my-bucket/l8"]
    )
    assert res.exit_code == 0, res.output
    assert "- s3://my-bucket/l8\n" in next((tmp_path / "b").glob("*.yaml")).read_text()
