"""celora_bench: the harness. Cases, timing, FLOPs, memory, results, reports, CLI."""
__version__ = "0.1.0"
