"""Engine layer: the model runner interface (``base``), the ONNX Runtime runner (``onnx``), the tokenizer
and chat template (``tokenizer``), numpy sampling (``sampling``) and dynamic batching (``batching``).
Nothing here knows about HTTP."""
