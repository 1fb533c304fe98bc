"""Spot interruption warning (two minutes): replace first, then drain (drain.py)."""

from __future__ import annotations

from provisioner.daemon.handling.drain import replace_first
from provisioner.daemon.handling.state import Outcome, Target
from provisioner.daemon.handling.steps import Steps
from provisioner.daemon.store import Entry


def handle(h: Steps, entry: Entry, t: Target) -> Outcome:
    return replace_first(h, entry, t, entry.deadline, replace=True, drain=True)
