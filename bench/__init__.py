"""Benchmarks of relaydesk against peers; `python -m bench.run` (make bench)."""
