"""prov: the cheapest GPU shape that really runs a large LLM under vLLM."""

__version__ = "0.1.0"
