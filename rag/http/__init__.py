"""`rag serve`: the HTTP door (OpenAI-compatible), its keys and its client."""
