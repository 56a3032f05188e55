"""Model pipeline (GGUF / HF folder / tiny -> ONNX fp32 with KV cache -> int8) and the manifest
contract with the service. ``manifest`` and ``ort_lm`` import without torch; ``pipeline`` and
``sources`` need the ``export`` extra for the build steps."""
