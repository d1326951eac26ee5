"""Shared test helpers: real models converted to Core AI, runtime runs, numpy references."""
