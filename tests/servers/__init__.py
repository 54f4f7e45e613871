"""Servers the tests and benchmarks start on 127.0.0.1 (imported as `servers.*`: pytest puts tests/ on the path)."""
