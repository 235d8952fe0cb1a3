"""Benchmarks of the venue rooms (see bench/README.md); run with `.venv/bin/python bench/run.py`."""
