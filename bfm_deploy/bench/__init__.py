"""``bfm-bench``: the paper's cost claim (parameters, MACs, FLOPs) and the runtime's measured latency.

Nothing here imports torch at module level: only ``--flops`` needs it (through ``bfm_models``).
"""
