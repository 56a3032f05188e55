"""All llm-service settings: one pydantic-settings class, read from ``LLM_*`` environment variables.

Build it in the app factory (``create_app(Settings(...))`` in tests, ``create_app()`` from the
environment in production); nothing reads the environment at import time. Every field carries a
description (the README's settings table can be generated from this class).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stack_common.auth import AuthSettings

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "fp16", "int8", "w8", "int4"]


class Settings(BaseSettings, AuthSettings):
    """LLM_* settings; auth/CORS fields (LLM_API_KEYS, LLM_ADMIN_KEY, LLM_OPEN_PATHS, LLM_CORS_ORIGINS) come from
    stack_common.auth.AuthSettings. LLM_ADMIN_KEY guards /admin/* (model load, unload, default)."""

    model_config = SettingsConfigDict(env_prefix="LLM_", extra="ignore", protected_namespaces=())

    # --- server -------------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address the HTTP server binds to (used by `make run`).")
    port: int = Field(8002, ge=1, le=65535, description="HTTP port of the llm-service.")
    log_level: str = Field("INFO", description="Log level (DEBUG, INFO, WARNING, ERROR).")
    log_json: bool = Field(True, description="Structured JSON logs (one object per line); false for plain text.")
    max_body_bytes: int = Field(1024 * 1024, ge=1024,
                                description="Largest accepted request body in bytes; larger bodies get 413.")

    # --- models -------------------------------------------------------------------------------
    models_dir: Path = Field(Path("./models"), description="Directory of exported models: one folder per "
                                                           "model with a manifest.json (scripts/optimize_model.py).")
    default_model: str | None = Field(None, description="Model loaded at start and used when a request names "
                                                        "none. Unset: the only model in `models_dir`, if "
                                                        "there is exactly one.")
    preload_models: list[str] = Field(default_factory=list,
                                      description="Further models to load at start (JSON list in the env, "
                                                  'e.g. LLM_PRELOAD_MODELS=\'["a","b"]\').')
    device: Device = Field("auto", description="auto: CUDA when a GPU is really usable, else CPU; cpu; cuda "
                                               "(fails to load when CUDA is not usable).")
    gpu_memory_fraction: float = Field(0.9, gt=0, le=1,
                                       description="Share of the GPU's memory the CUDA execution provider may "
                                                   "use (mapped to its gpu_mem_limit).")
    precision: Precision = Field("auto", description="Variant to serve: auto = on CPU the fastest variant that "
                                                     "passed the quality gate on this CPU kind (fp32 until one "
                                                     "has), on CUDA the manifest's CUDA default (fp32); or a "
                                                     "variant name, served as given. Requests may ask for "
                                                     "another precision (loaded on first use).")
    gate_on_load: bool = Field(True, description="When a model has no quality-gate result for this CPU kind "
                                                 "(built on another machine), serve fp32 and run the gate in "
                                                 "the background, then switch to its choice (cached in "
                                                 "models/<name>/gates/). false: stay on fp32.")
    intra_op_threads: int = Field(1, ge=0, description="onnxruntime intra-op threads per session "
                                                       "(0 = all cores). Spinning is always off.")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimization level of the sessions.")

    # --- batching and limits ------------------------------------------------------------------
    max_batch_size: int = Field(8, ge=1, le=256, description="Most sequences decoded together by one model.")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="How long an idle engine waits for more "
                                                                 "requests before starting a batch, in ms.")
    max_queue: int = Field(64, ge=0, description="Most requests waiting for a batch slot; past it requests "
                                                 "get 429 with Retry-After at once.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After (seconds) sent with 429 answers.")
    max_new_tokens_limit: int = Field(1024, ge=1, description="Largest accepted max_new_tokens / max_tokens.")
    default_max_new_tokens: int = Field(128, ge=1, description="max_new_tokens of /generate when not given "
                                                               "(OpenAI endpoints default to 16, like OpenAI).")
    max_prompt_chars: int = Field(100_000, ge=1, description="Longest accepted prompt, in characters.")
    request_timeout_s: float = Field(300.0, gt=0, description="A generation running longer is cancelled: "
                                                              "504, or for a stream a last event "
                                                              "{\"error\": {\"type\": \"timeout\"}} before [DONE].")

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            self.default_max_new_tokens = self.max_new_tokens_limit
        return self
