"""Backends: lower pt2e_int8 graphs to deployable artifacts (.pte, .onnx)."""
