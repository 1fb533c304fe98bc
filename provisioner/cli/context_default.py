"""The one `--ctx` default of `prov quote`, `prov fit` and `prov models show`.

The context is vLLM's --max-model-len: `prov deploy` starts vLLM with the plan's (the quote's
--ctx), so quote's default is what a deployment serves, and fit and models show must size the
same requests by default or they contradict the quote (review7 #15: quote used 32k, fit the
model's max_position_embeddings, models show 128k). 32k serves the default workload (8,000
tokens in, 1,000 out) with room for longer prompts; a model whose max_position_embeddings is
shorter gets that (vLLM refuses a longer --max-model-len).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioner.core.models import ModelSpec

DEFAULT_CTX = 32 * 1024

CTX_DEFAULT_HELP = (
    "Default: 32k, or the model's max_position_embeddings when shorter; the same in quote, "
    "fit and models show (deploy starts vLLM with the plan's)."
)


def resolve_ctx(text: str | None, spec: ModelSpec) -> tuple[int, bool]:
    """(tokens, defaulted): the --ctx given, or the default for this model."""
    from provisioner.core.request import parse_tokens

    if text is not None:
        return parse_tokens(text), False
    return min(DEFAULT_CTX, spec.max_position_embeddings), True


def default_note(tokens: int, spec: ModelSpec) -> str:
    """What a defaulted --ctx means, for the outputs that say so."""
    longest = spec.max_position_embeddings
    if tokens < DEFAULT_CTX:
        return f"--ctx not given: {tokens:,} tokens, the model's max_position_embeddings"
    more = (
        f"; the model takes up to {longest:,} (vLLM's default without --max-model-len)"
        if longest > tokens
        else ""
    )
    return f"--ctx not given: {tokens:,} tokens, prov's default{more}"
