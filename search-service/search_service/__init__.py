"""search-service: hybrid (dense + BM25) retrieval over the Qdrant engine, Redis cache, RAG."""
__version__ = "0.1.0"
