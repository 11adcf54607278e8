"""The benchmark harness: `python bench/run.py` writes bench/RESULTS.md and bench/results.json."""
