"""Run the throughput benchmark (same as `tbptt bench`): python benchmarks/bench.py [--quick]
[--json FILE]."""

import sys

from tbptt.bench import main

if __name__ == "__main__":
    sys.exit(main())
