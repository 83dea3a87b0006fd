"""`make bench`: Vibewave's performance benchmarks (see bench/README.md)."""
