"""Chunking, the SQLite store, the vectors, ingest (local and on Ray) and uploads."""
