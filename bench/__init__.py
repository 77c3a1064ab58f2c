"""Postroom's benchmark: load generator, ticket receiver, baselines and the `bench/run` driver.

Not part of the test suite and not installed with the package; run it from the repository root.
"""
