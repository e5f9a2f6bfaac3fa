"""Ingestion: CSV, Parquet and JSON-lines files → canonical ``events`` (+ users, items), bad rows quarantined."""

from engine.ingest.loader import IngestReport, file_sha256, ingest_path
from engine.ingest.mappings import MAPPINGS

__all__ = ["MAPPINGS", "IngestReport", "file_sha256", "ingest_path"]
