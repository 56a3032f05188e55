"""llm-service: ONNX causal-LM serving with an OpenAI-compatible API, streaming, dynamic batching and
model swap without restart. App factory: ``llm_service.main:create_app``."""
