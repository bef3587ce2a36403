"""Records and their presentation, errors, settings and paths: what every layer above may use;
imports nothing of rag above it."""
