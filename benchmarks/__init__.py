"""Benchmarks and experiments of dldemos (lib/: the code their scripts use)."""
