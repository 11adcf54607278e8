"""Private symbols of our dependencies, one module per dependency, each naming the pinned version.

Nothing outside these modules touches a private torchao name (tests/core/test_compat.py
greps for it), so an upgrade breaks here, loudly, in one place.
"""
