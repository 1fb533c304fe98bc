"""Shared fixtures. Every test is hermetic: no network beyond 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator

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


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test() -> Iterator[None]:
    """A daemon started by a test is stopped by it: no scheduler thread survives the test (its
    jobs would act, and log, after the test), and `prov daemon` run in-process leaves no
    handler on the "prov" logger (it would write to a stream closed since)."""
    import logging
    import threading

    from provisioner.daemon.scheduler import JOB_THREAD, SCHEDULER_THREAD

    prov = logging.getLogger("prov")
    before = (prov.handlers[:], prov.propagate)
    yield
    left = [
        t.name
        for t in threading.enumerate()
        if t.is_alive() and (t.name == SCHEDULER_THREAD or t.name.startswith(JOB_THREAD))
    ]
    assert not left, f"daemon scheduler threads outlived the test: {left}"
    assert (prov.handlers[:], prov.propagate) == before, "the test left logging changed"
