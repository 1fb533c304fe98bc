"""Pulumi programs that deploy a prov plan as vLLM (see issue: prov deploy)."""
