"""Prometheus metrics of one app instance (own registry, so several apps can share a process).

Names follow vLLM's (``vllm:time_to_first_token_seconds`` -> ``llm_time_to_first_token_seconds``) where
they match; ``model_load_duration_seconds`` and ``gpu_memory_usage_bytes`` keep the seed's names.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_TTFT = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
_E2E = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_LOAD = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_success = Counter("llm_request_success_total", "Finished generations by finish_reason",
                                       ["finish_reason"], registry=r)
        self.request_failure = Counter("llm_request_failure_total",
                                       "Generations that did not finish: overloaded (429), cancelled "
                                       "(client gone), timeout, error", ["reason"], registry=r)
        self.ttft = Histogram("llm_time_to_first_token_seconds", "Arrival to first generated token",
                              buckets=_TTFT, registry=r)
        self.itl = Histogram("llm_inter_token_latency_seconds",
                             "Time between two generated tokens of one request (time per output token)",
                             buckets=_ITL, registry=r)
        self.e2e = Histogram("llm_e2e_request_latency_seconds", "Arrival to last token", buckets=_E2E, registry=r)
        self.queue_time = Histogram("llm_request_queue_time_seconds", "Arrival to joining a batch",
                                    buckets=_TTFT, registry=r)
        self.waiting = Gauge("llm_num_requests_waiting", "Requests waiting for a batch slot", registry=r)
        self.running = Gauge("llm_num_requests_running", "Sequences being decoded", registry=r)
        self.prompt_tokens = Counter("llm_prompt_tokens_total", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter("llm_generation_tokens_total", "Tokens generated", registry=r)
        self.batch_size = Histogram("llm_batch_size", "Sequences in one decode step",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256), registry=r)
        self.load_duration = Histogram("model_load_duration_seconds", "Time to load one model variant",
                                       ["model", "precision"], buckets=_LOAD, registry=r)
        self.model_loaded = Gauge("llm_model_loaded", "1 per loaded model variant (with its execution provider)",
                                  ["model", "precision", "provider"], registry=r)
        self.gpu_memory = Gauge("gpu_memory_usage_bytes", "GPU memory used by this process (0 on CPU)", registry=r)
        self.gpu_memory.set(0)
