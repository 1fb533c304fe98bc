"""What a family builder gets and fills (``Decoder``) and how a family is registered (``Family``).

Pure. models.parse_config reads the fields every family shares (hidden size, layers, heads,
head_dim, the dense MLP width), hands a ``Decoder`` to the family's ``build`` function, and
assembles the ModelSpec from what the builder left in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from provisioner.core.model_config import opt, req
from provisioner.core.weights import GroupBuilder, MlaDims, MoeDims


@dataclass
class Decoder:
    """The decoder stack of one config.json while its family builds the weight inventory."""

    cfg: Mapping[str, Any]  # the text config (text_config merged for multimodal checkpoints)
    model_id: str
    h: int  # hidden_size
    n_layers: int
    nh: int  # attention heads
    nkv: int  # KV heads
    hd: int  # head_dim: a builder may replace it (MLA: nope + rope)
    inter: int  # dense MLP width (0 when absent): a builder may replace it
    b: GroupBuilder = field(default_factory=GroupBuilder)
    windows: list[int | None] = field(init=False)  # per layer: None = full attention
    notes: list[str] = field(default_factory=list)
    mla: MlaDims | None = None
    moe: MoeDims | None = None

    def __post_init__(self) -> None:
        self.windows = [None] * self.n_layers

    @property
    def norm_per_layer(self) -> int:
        """input and post-attention RMSNorm weights of one layer."""
        return 2 * self.h

    def req(self, key: str) -> int:
        return int(req(self.cfg, key, self.model_id))

    def opt(self, key: str, default: int) -> int:
        return opt(self.cfg, key, default, self.model_id)


@dataclass(frozen=True)
class Family:
    """One registered family: the model_types it reads and the function that builds it."""

    name: str  # ModelSpec.family; perf and planner key on it
    model_types: tuple[str, ...]  # config.json model_type values read by this family
    label: str  # how the refusal message lists it among the supported families
    build: Callable[[Decoder], None]
    # A multimodal family whose published configs may omit the vision tower vLLM still loads.
    vision_tower: Mapping[str, int] | None = None
    # The projector from vision to text width: a 2x2 patch merger, or Llama 4's adapter MLP.
    vision_projector: Literal["patch_merger", "adapter"] = "patch_merger"
