"""Settings and metrics of the llm-service."""
