"""The pure core: models, quantization, memory, vLLM rules, throughput, the planner.

No SDK, no I/O beyond packaged data.
"""
