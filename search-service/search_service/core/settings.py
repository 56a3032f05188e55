"""All search-service settings: one pydantic-settings class, read from ``SEARCH_*`` environment variables.

Build it in the app factory (``create_app(Settings(...))`` in tests, ``create_app()`` from the
environment in production); nothing reads the environment at import time. Every field carries a
description: the README's settings table is generated from this class.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stack_common.auth import AuthSettings

from ..embedding_models import MODELS
from ..fusion import DEFAULT_METHOD, Method


class Settings(BaseSettings, AuthSettings):
    """SEARCH_* settings; auth/CORS fields (SEARCH_API_KEYS, SEARCH_ADMIN_KEY, SEARCH_OPEN_PATHS,
    SEARCH_CORS_ORIGINS) come from stack_common.auth.AuthSettings. SEARCH_ADMIN_KEY guards collection DELETE and
    POST /collections/{name}/optimize."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_", extra="ignore")

    # --- server -------------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address the HTTP server binds to (used by `make run`).")
    port: int = Field(8001, ge=1, le=65535, description="HTTP port of the search service.")
    log_level: str = Field("INFO", description="Log level (DEBUG, INFO, WARNING, ERROR).")
    log_json: bool = Field(True, description="Structured JSON logs (one object per line); false for plain text.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024,
                                description="Largest accepted request body in bytes; larger bodies get 413.")
    ui_enabled: bool = Field(True, description="Serve the page for people at /ui (search, explain, streamed "
                                               "cited answers, collections); it needs no key itself, its API "
                                               "calls do. False: no /ui.")

    # --- storage ------------------------------------------------------------------------------
    data_dir: Path = Field(Path("./data/search"),
                           description="Directory of the embedded Qdrant engine (collections, WAL); "
                                       "ignored when `qdrant_url` is set.")
    qdrant_url: str | None = Field(None, description="Qdrant server URL (e.g. http://qdrant:6333). Unset: the "
                                                     "embedded engine under `data_dir`; `:memory:` runs "
                                                     "qdrant-client's local mode (tests).")
    qdrant_api_key: str | None = Field(None, description="API key for the Qdrant server, if it needs one.")
    qdrant_timeout_s: float = Field(5.0, gt=0, description="Timeout of one Qdrant server call, in seconds.")
    qdrant_shard_number: int = Field(1, ge=1, le=64, description="Server mode only (an http(s) `qdrant_url`; the "
                                     "embedded engine and local mode have one shard and no replicas, and refuse "
                                     "to start with another value of these three): shards of a new collection, its "
                                     "points split by id hash and searched in parallel; a request's `shard_number` "
                                     "overrides it. Fixed at creation.")
    qdrant_replication_factor: int = Field(1, ge=1, le=10, description="Server mode only: copies of each shard of a "
                                           "new collection, on different peers (2: one peer may be lost and the "
                                           "collection still serves); a request's `replication_factor` overrides it.")
    qdrant_write_consistency_factor: int = Field(1, ge=1, le=10, description="Server mode only: copies of a shard "
                                                 "that must apply a write before it is acknowledged (at most the "
                                                 "replication factor; 1 keeps writes going with a copy down); a "
                                                 "request's `write_consistency_factor` overrides it.")
    # --- vector index of the embedded engine (a Qdrant server indexes by its own config) ---------
    auto_index: bool = Field(True, description="Embedded engine: build a collection's HNSW index by itself, in a "
                                               "child process, once `index_threshold` points have none.")
    index_threshold: int = Field(20_000, ge=1, description="Points without an index that start a build (embedded).")
    index_quiet_s: float = Field(2.0, ge=0, le=3600, description="Seconds without writes before a build starts "
                                                                 "(a bulk load finishes first).")
    index_threads: int = Field(1, ge=1, le=64, description="Indexing threads of the build process (1 leaves the "
                                                           "other core to searches on 2 cores).")
    hnsw_m: int = Field(16, ge=4, le=128, description="HNSW edges per node (embedded).")
    hnsw_ef_construct: int = Field(100, ge=8, le=2000, description="HNSW candidates while building (embedded).")
    hnsw_ef: int = Field(256, ge=8, le=4096, description="HNSW candidates a dense search visits: recall vs speed "
                                                         "(embedded; README \"Scaling\" has the sweep).")

    # --- cache --------------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis used as the search-response cache.")
    cache_enabled: bool = Field(True, description="Cache search responses in Redis (cache-aside).")
    cache_ttl_s: int = Field(300, ge=1, description="Time to live of a cached search response, in seconds.")
    cache_prefix: str = Field("search", description="Prefix of every cache key (lets services share a Redis).")
    redis_timeout_s: float = Field(0.1, gt=0, le=5,
                                   description="Timeout of one Redis call in seconds; kept small so a slow "
                                               "Redis never slows search (the cache is bypassed instead).")
    redis_retry_s: float = Field(1.0, ge=0, description="After a Redis failure, bypass the cache for this long "
                                                         "before trying Redis again.")

    # --- model --------------------------------------------------------------------------------
    models_dir: Path = Field(Path("./models"), description="Where exported/quantized models are cached.")
    embed_threads: int = Field(1, ge=0, description="onnxruntime intra-op threads of the embedder "
                                                    "(0 = onnxruntime's default: all cores).")
    embedding_models: str = Field(
        "minilm,multilingual-e5-small",
        description="Embedding models loaded at startup, comma-separated (`minilm`: English, 6 layers; "
                    "`multilingual-e5-small`: ~100 languages, Korean included, 12 layers, ~0.2 GB more memory). Each "
                    "is built once into models_dir. A collection records its model at creation; one whose model is "
                    "not loaded answers 503.")
    embedding_model: str = Field("minilm", description="The model of a collection created without `embedding_model` "
                                                       "(one of embedding_models).")
    embed_batch_size: int = Field(8, ge=1, le=512, description="Batch size when embedding documents (onnxruntime keeps "
                                                                 "an arena as large as the largest batch: 8 adds ~0.3 GB RSS, 32 ~1.2 GB).")
    embed_workers: int = Field(1, ge=1, le=16, description="Query-embedding calls that may run at once (each on "
                                                          "embed_threads threads); queries arriving meanwhile are "
                                                          "batched into the next call.")
    embed_query_cache: int = Field(4096, ge=0, le=1_000_000,
                                   description="Recent query texts whose embedding is kept in memory (~1.6 KB "
                                               "each), so the next page or another filter of the same query "
                                               "skips the model; 0 = off.")
    embed_max_batch: int = Field(32, ge=1, le=512, description="Most concurrent queries handed to the embedding "
                                 "thread together (it runs them in calls of similar length).")
    embed_batch_wait_ms: float = Field(1.0, ge=0, le=100, description="How long a query waits for others to "
                                                                     "share its embedding call (micro-batching).")

    # --- ingestion ----------------------------------------------------------------------------
    embed_doc_tokens: int = Field(512, ge=16, le=512,
                                  description="Tokens of each chunk an embedding model sees when ingesting, capped at "
                                              "each model's limit (so by default each its own: MiniLM 256, "
                                              "multilingual-e5-small 512). Fixed per collection at creation; a model's "
                                              "cost is about linear in tokens, so fewer ingest long texts faster "
                                              "(README: Embedding models).")
    chunk_words: int = Field(384, ge=16, le=4096,
                             description="Documents longer than this many words are split into chunks "
                                         "(each chunk is embedded and BM25-indexed; hits collapse to the document).")
    chunk_overlap: int = Field(64, ge=0, description="Words shared by consecutive chunks.")
    max_batch_docs: int = Field(512, ge=1, description="Most documents accepted in one upsert request.")
    max_text_chars: int = Field(200_000, ge=1, description="Longest accepted document text, in characters.")
    bm25_k1: float = Field(1.2, gt=0, description="BM25 term-frequency saturation k1 (for new collections).")
    bm25_b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation b (for new collections).")

    # --- search -------------------------------------------------------------------------------
    max_query_chars: int = Field(2000, ge=1, description="Longest accepted query, in characters.")
    max_offset: int = Field(1000, ge=0, description="Largest accepted `offset` of a search request.")
    candidates: int = Field(100, ge=1, le=1000, description="Candidates each retriever returns before fusion "
                                                            "(at least offset + limit).")
    doc_id_map_size: int = Field(200_000, ge=1000, le=50_000_000,
                                 description="Point ids per collection whose document id the search path keeps "
                                             "in memory (~250 bytes each), so candidates need no payload read.")
    fusion: Method = Field(DEFAULT_METHOD, description="Default fusion method: rrf, dbsf, minmax or zscore.")
    alpha: float | None = Field(None, ge=0, le=1, description="Default weight of each dense retriever (the "
                                "collection's model, and each extra one) in convex fusions (minmax, zscore); "
                                "keyword gets 1 - alpha. Unset: the collection's model's own (minilm 0.45, "
                                "multilingual-e5-small 0.55, measured on SciFact).")
    rrf_k: int = Field(60, ge=1, description="Default RRF constant k (textbook definition, ranks from 1).")
    filter_max_depth: int = Field(4, ge=1, le=16, description="Deepest nesting accepted in a search filter.")
    filter_max_conditions: int = Field(64, ge=1, description="Most conditions accepted in one search filter.")

    highlight_snippet_chars: int = Field(240, ge=40, le=4000,
                                         description="Length of the snippet a `highlight: true` search returns "
                                                     "per result, in characters (cut at spaces, so a little "
                                                     "shorter).")

    preload_korean: bool = Field(False, description="Load the Korean morphological analyzer (Kiwi: ~450 MB RSS, "
                                                    "~2 s) at start; by default it loads on the first Korean text.")

    # --- RAG ----------------------------------------------------------------------------------
    llm_url: str = Field("http://127.0.0.1:8002", description="Base URL of the llm-service (used by RAG).")
    llm_api_key: SecretStr | None = Field(None, description="API key sent to the llm-service "
                                                            "(`Authorization: Bearer`) when it has LLM_API_KEYS set.")
    llm_timeout_s: float = Field(60.0, gt=0, le=600, description="Longest wait for the llm-service's answer "
                                                               "(or for its next streamed chunk) before RAG gives 503.")
    llm_connect_timeout_s: float = Field(2.0, gt=0, le=60, description="Timeout of connecting to the llm-service "
                                                                      "(one retry on connect errors).")
    llm_model: str | None = Field(None, description="Model RAG asks the llm-service for; unset = its default model.")
    rag_context_tokens: int = Field(256, ge=32, le=32768, description="Token budget for the source sentences in the "
                                                                     "RAG prompt (estimated at 4 characters a token): "
                                                                     "sized for a small model, whose prefill is most of "
                                                                     "an answer's time; keep it below the model's "
                                                                     "context minus max_tokens.")
    rag_sentences_per_passage: int = Field(3, ge=1, le=20, description="Most sentences a RAG prompt takes from one "
                                                                        "passage (the ones closest to the question).")
    rag_max_tokens: int = Field(64, ge=1, le=4096, description="Default length limit of a RAG answer, in tokens "
                                                               "(the prompt asks for one or two sentences).")

    @property
    def embedding_model_keys(self) -> list[str]:
        return list(dict.fromkeys(k.strip() for k in self.embedding_models.split(",") if k.strip()))

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        keys = self.embedding_model_keys
        unknown = [k for k in keys if k not in MODELS]
        if unknown or not keys:
            raise ValueError(f"embedding_models: unknown {unknown or 'none given'}; available: {sorted(MODELS)}")
        if self.embedding_model not in keys:
            raise ValueError(f"embedding_model {self.embedding_model!r} must be one of embedding_models {keys}")
        if self.chunk_overlap >= self.chunk_words:
            raise ValueError("chunk_overlap must be smaller than chunk_words")
        if self.qdrant_write_consistency_factor > self.qdrant_replication_factor:
            raise ValueError("qdrant_write_consistency_factor must not exceed qdrant_replication_factor")
        layout = {"qdrant_shard_number": self.qdrant_shard_number,
                  "qdrant_replication_factor": self.qdrant_replication_factor,
                  "qdrant_write_consistency_factor": self.qdrant_write_consistency_factor}
        if not (self.qdrant_url or "").startswith(("http://", "https://")):
            for name, value in layout.items():
                if value != 1:
                    raise ValueError(f"{name}={value} needs a Qdrant server (SEARCH_QDRANT_URL=http...): the "
                                     "embedded engine and local mode keep a collection in one shard with no replicas")
        return self
