"""What the benchmark scripts have in common: benchmarks/speed and
benchmarks/experiments import it as benchmarks.lib.<module>."""
