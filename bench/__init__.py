"""Benchmarks: standalone scripts (`python -m bench.<name>`) that print their figures as JSON."""
