"""Private symbols of the backends' dependencies, one module per dependency (see executorch.py)."""
