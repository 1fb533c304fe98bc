"""Rebalance recommendation: cordon only by default; ``--prewarm-on-rebalance`` also requests
the replacement, ``--rebalance-drain`` runs the whole replace-first drain."""

from __future__ import annotations

from provisioner.daemon.handling.drain import replace_first
from provisioner.daemon.handling.state import Outcome, Target
from provisioner.daemon.handling.steps import Steps
from provisioner.daemon.store import Entry


def handle(h: Steps, entry: Entry, t: Target) -> Outcome:
    replace = h.cfg.prewarm_on_rebalance or h.cfg.rebalance_drain
    return replace_first(h, entry, t, entry.deadline, replace=replace, drain=h.cfg.rebalance_drain)
