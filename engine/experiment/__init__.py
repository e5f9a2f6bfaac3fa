"""Readouts of randomized experiments from any CSV or Parquet file (``pushwise experiment analyze``)."""

from engine.experiment.reader import experiment_counts

__all__ = ["experiment_counts"]
