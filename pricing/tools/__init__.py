"""Maintainer tools: building the embedded price snapshot from the dated catalogs."""
