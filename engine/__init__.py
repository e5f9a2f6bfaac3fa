"""Pushwise: behavior → DuckDB → LightGBM models → personalized plan → vendor dispatch → dashboard."""

__version__ = "0.1.0"
__all__ = ["__version__"]
