"""Shared test helpers: tiny offline models (`tiny_models`) and real servers on loopback
(`servers`). Benchmarks import them too, with the repository root on `sys.path`."""
