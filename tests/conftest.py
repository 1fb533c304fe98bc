"""Shared fixtures. Every test is hermetic: no network beyond 127.0.0.1."""

from __future__ import annotations

import os

import pytest

from provisioner.core.catalog import resolve_model
from provisioner.core.models import ModelSpec


@pytest.fixture(scope="session")
def kimi_thinking() -> ModelSpec:
    return resolve_model("moonshotai/Kimi-K2-Thinking")


@pytest.fixture(scope="session")
def llama70b() -> ModelSpec:
    return resolve_model("meta-llama/Llama-3.1-70B")


@pytest.fixture(autouse=True, scope="session")
def _isolated_price_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A user's live price cache (prov prices refresh) must not leak into tests."""
    os.environ["PROV_CACHE_DIR"] = str(tmp_path_factory.mktemp("prov-cache"))
