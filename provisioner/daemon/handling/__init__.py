"""Handling notices: one module per kind (spot, rebalance, scheduled, state_change,
asg_lifecycle, spare) behind one interface (handler.py), built from shared steps (steps.py)
and the resumable replace-first drain (drain.py), with typed flow state (state.py)."""
