"""Rebalance recommendation: cordon only, unless the replacement must start now: with
``--prewarm-on-rebalance``, or by default when the plan's time to serve (``--time-to-serve``)
exceeds the spot notice (spares.prewarm_on_rebalance, the stack's rule); ``--rebalance-drain``
runs the whole replace-first drain."""

from __future__ import annotations

from provisioner.daemon.handling.drain import replace_first
from provisioner.daemon.handling.state import Outcome, Target
from provisioner.daemon.handling.steps import Steps
from provisioner.daemon.spares import prewarm_on_rebalance
from provisioner.daemon.store import Entry


def handle(h: Steps, entry: Entry, t: Target) -> Outcome:
    replace = prewarm_on_rebalance(h.cfg) or h.cfg.rebalance_drain
    return replace_first(h, entry, t, entry.deadline, replace=replace, drain=h.cfg.rebalance_drain)
