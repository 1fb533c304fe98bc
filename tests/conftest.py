"""Shared fixtures. Every test is hermetic: no network beyond 127.0.0.1."""

from __future__ import annotations

import pytest

from provisioner.catalog import resolve_model
from provisioner.models import ModelSpec


@pytest.fixture(scope="session")
def kimi_thinking() -> ModelSpec:
    return resolve_model("moonshotai/Kimi-K2-Thinking")


@pytest.fixture(scope="session")
def llama70b() -> ModelSpec:
    return resolve_model("meta-llama/Llama-3.1-70B")
