"""The CLI: one module per command group, registered by main.py; the only place that prints."""
