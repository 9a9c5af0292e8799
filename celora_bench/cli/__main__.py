"""python -m celora_bench.cli (torchrun -m celora_bench.cli): the celora-bench command."""
import sys

from celora_bench.cli import main

sys.exit(main())
