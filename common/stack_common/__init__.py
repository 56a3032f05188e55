"""Pieces both services share. One home for them, so neither service copies the other.

- ``logs``: structured (JSON) logs.
- ``errors``: one error shape ``{"error": {"type", "message", "details"?}}`` for every 4xx/5xx,
  and handlers that never leak a stack trace to the client.
- ``limits``: request-body size limit (413) as pure ASGI middleware.
- ``ort``: ONNX Runtime session options (intra-op threads, spinning off) and provider choice.
- ``metrics``: a per-app Prometheus registry and the ``/metrics`` route.
- ``heap``: freeze start-up objects out of Python's garbage collection (full collections were p99 stalls).
"""
