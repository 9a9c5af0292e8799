"""The benchmark suites, one module per suite; registered in celora_bench.registry."""
