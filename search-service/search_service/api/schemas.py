"""Request and response schemas of the HTTP API (pydantic). No I/O here."""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..embedding_models import MODELS
from ..fusion import Method as FusionName
from ..store.base import MAX_COLLECTION_NAME, MAX_REPLICAS, MAX_SHARDS

EmbeddingModelName = Literal[tuple(MODELS)]         # an unknown name: 422 listing these
# Hard ceilings of the schema; the configurable (lower) limits are checked with the settings.
MAX_QUERY_CHARS = 10_000
MAX_OFFSET = 10_000


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, description="The search text.")
    collection: str = Field(..., min_length=1, max_length=MAX_COLLECTION_NAME, description="Collection to search.")
    limit: int = Field(10, ge=1, le=100, description="Results to return (1-100).")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Results to skip (paging).")
    score_threshold: float | None = Field(None, ge=0.0, le=1.0,
                                          description="Drop results whose normalised score is below this (0-1).")
    fusion: FusionName | None = Field(None, description="Fusion method (hybrid only); default from settings.")
    alpha: float | None = Field(None, ge=0.0, le=1.0,
                                description="Weight of each dense retriever against keyword's 1 - alpha (convex "
                                            "fusions): `vector`, and `vector:<model>` for each extra embedding "
                                            "model of the collection. Default: SEARCH_ALPHA if set, else the "
                                            "collection's model's (minilm 0.45, multilingual-e5-small 0.55).")
    weights: dict[str, float] | None = Field(None, description="Per-retriever weights, e.g. {\"vector\": 0.6, "
                                                               "\"keyword\": 0.4}; a collection with extra "
                                                               "embedding models adds `vector:<model>` names.")
    rrf_k: int | None = Field(None, ge=1, le=10_000, description="RRF constant k (ranks from 1).")
    filter: dict[str, Any] | None = Field(None, description="Payload filter: must/should/must_not of "
                                                            "{key, match|range} conditions, nestable.")
    explain: bool = Field(False, description="Add each retriever's rank and raw score to every result, and a "
                                             "top-level `explain`: the query's script, the retrievers used or "
                                             "skipped and why, the confidence of the scores.")
    highlight: bool = Field(False, description="Add to every result the spans of its title and text that match "
                                               "the query (the query's BM25 terms: same stemming, stopwords and "
                                               "Korean morphemes) and a snippet of the text around the best "
                                               "match. Offsets are Unicode code points, end exclusive.")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be blank")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if not v or len(v) > 8:
            raise ValueError("weights must name 1-8 retrievers")
        for name, w in v.items():
            if w < 0 or w > 100:
                raise ValueError(f"weight of '{name}' must be between 0 and 100")
        return v


class Explain(BaseModel):
    rank: int
    score: float


class Span(BaseModel):
    start: int = Field(description="First character (Unicode code points, as Python counts; JavaScript counts "
                                   "UTF-16 units, which differ for characters outside the BMP such as emoji).")
    end: int = Field(description="End (exclusive).")


class Snippet(BaseModel):
    text: str = Field(description="A window of the result's text around the best match (text[start:end]).")
    start: int = Field(description="Where the snippet starts in the result's text (code points).")
    end: int = Field(description="Where it ends (exclusive).")
    spans: list[Span] = Field(description="The matches inside the snippet, relative to the snippet's text.")


class Highlight(BaseModel):
    terms: list[str] = Field(description="The query's index terms this result matches (sorted, unique).")
    title: list[Span] = Field(description="Matches in the title (empty without a title).")
    text: list[Span] = Field(description="Matches in the text.")
    snippet: Snippet


class SearchResult(BaseModel):
    id: str
    score: float
    title: str | None = None
    text: str
    metadata: dict[str, Any] = {}
    explain: dict[str, Explain] | None = None
    highlight: Highlight | None = None


class RetrieverExplain(BaseModel):
    used: bool = Field(description="Whether the retriever ran for this query.")
    reason: str | None = Field(None, description="Why it was skipped (the query's script is not covered by the "
                                                 "collection's embedding model), or why it found nothing.")
    warning: str | None = Field(None, description="/search/vector on a script its model does not cover: it ran "
                                                  "anyway, as asked.")
    hits: int | None = Field(None, description="Documents among its candidates.")
    best: float | None = Field(None, description="Its best raw score: cosine (vector), BM25 (keyword).")
    evidence: float | None = Field(None, description="Hybrid: what its best score says for the query having an "
                                                     "answer (0-1; 0 when it found nothing; null: uncalibrated).")
    weight: float | None = Field(None, description="Hybrid: its weight in the fusion and in the confidence.")
    scale: float | None = Field(None, description="Hybrid, keyword: S of its evidence, 1 - exp(-best / S): the idf "
                                                  "of a term only one of the collection's chunks holds.")


class SearchExplain(BaseModel):
    query_script: str | None = Field(description="The writing system of most of the query's letters (Latin, "
                                                 "Hangul, Han, Kana, Cyrillic, Greek, Arabic, Hebrew, Thai, "
                                                 "Devanagari, Other); null without letters.")
    embedding_model: str | None = Field(None, description="The collection's embedding model id.")
    retrievers: dict[str, RetrieverExplain]
    confidence: float | None = Field(None, description="Hybrid: the factor every fused score was multiplied by: "
                                                       "the weighted mean of the retrievers' evidence (0-1).")


class SearchResponse(BaseModel):
    results: list[SearchResult]
    total: int = Field(description="Results that passed the threshold (before offset/limit).")
    took_ms: float
    cached: bool
    explain: SearchExplain | None = Field(None, description="With `explain: true`: the query's script, each "
                                                            "retriever used or skipped and why, and (hybrid) the "
                                                            "confidence the fused scores were scaled by.")


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=MAX_COLLECTION_NAME, description="Letters, digits, '_' or '-'.")
    chunk_words: int | None = Field(None, ge=16, le=4096, description="Chunk size in words (default: settings).")
    chunk_overlap: int | None = Field(None, ge=0, le=2048, description="Words shared by consecutive chunks.")
    bm25_k1: float | None = Field(None, gt=0, le=10, description="BM25 k1.")
    bm25_b: float | None = Field(None, ge=0, le=1, description="BM25 b.")
    embedding_model: EmbeddingModelName | None = Field(
        None, description="The collection's embedding model: `minilm` (English) or `multilingual-e5-small` (~100 "
                          "languages, Korean included). Default: SEARCH_EMBEDDING_MODEL. Fixed for the collection's "
                          "life; another name is refused (422, listing these).")
    extra_embedding_models: list[EmbeddingModelName] | None = Field(
        None, max_length=4,
        description="More embedding models fused into the collection's hybrid search, each a dense vector of every "
                    "chunk and a retriever `vector:<model>` (e.g. `[\"minilm\"]` on a `multilingual-e5-small` "
                    "collection: English queries fuse BM25 + e5 + MiniLM, Korean ones skip MiniLM by the language "
                    "gate). Each costs its model's time at ingestion and per query. Fixed at creation.")
    shard_number: int | None = Field(None, ge=1, le=MAX_SHARDS,
                                     description="Qdrant server only: shards the collection is split into (by point "
                                                 "id hash). Default: SEARCH_QDRANT_SHARD_NUMBER; the embedded "
                                                 "engine has one (another value: 400).")
    replication_factor: int | None = Field(None, ge=1, le=MAX_REPLICAS,
                                           description="Qdrant server only: copies of each shard, on different peers. "
                                                       "Default: SEARCH_QDRANT_REPLICATION_FACTOR; embedded: 1.")
    write_consistency_factor: int | None = Field(None, ge=1, le=MAX_REPLICAS,
                                                 description="Qdrant server only: copies that must apply a write "
                                                             "before it is acknowledged (<= replication_factor). "
                                                             "Default: SEARCH_QDRANT_WRITE_CONSISTENCY_FACTOR "
                                                             "(capped at replication_factor); embedded: 1.")

    @model_validator(mode="after")
    def _writes_within_copies(self) -> "CreateCollection":
        w, r = self.write_consistency_factor, self.replication_factor
        if w is not None and r is not None and w > r:
            raise ValueError(f"write_consistency_factor ({w}) must not exceed replication_factor ({r})")
        return self


class CollectionSummary(BaseModel):
    name: str
    chunks: int
    model_id: str | None
    dim: int
    embedding_model: str | None = Field(None, description="The collection's embedding model (its key).")
    extra_embedding_models: list[str] = Field(default_factory=list,
                                              description="Extra models fused into its hybrid search (keys).")


class CollectionDetail(BaseModel):
    name: str
    documents: int
    chunks: int
    model_id: str | None
    dim: int
    embedding_model: str | None = Field(None, description="The collection's embedding model (its key).")
    embedding: dict[str, Any] | None = Field(None, description="What the collection recorded of its model: name, "
                                                               "id, dim, max_tokens, scripts, languages, "
                                                               "query_prefix, passage_prefix.")
    model_loaded: bool = Field(description="This service loads the collection's model (else searches answer 503).")
    model_matches: bool
    extra_embedding_models: list[dict[str, Any]] = Field(
        default_factory=list, description="The extra models fused into hybrid search: embedding_model, model_id, "
                                          "dim, vector (the store's name), retriever, model_loaded, model_matches.")
    chunk_words: int | None
    chunk_overlap: int | None
    bm25: dict[str, Any]
    version: str | None
    created_at: float | None
    shard_number: int = Field(description="Shards of the collection (as the Qdrant server reports; 1 embedded).")
    replication_factor: int = Field(description="Copies of each shard (1 embedded).")
    write_consistency_factor: int = Field(description="Copies that must apply a write before it is acknowledged.")
    index: dict[str, Any] = Field(default_factory=dict,
                                  description="The vector index: state (none | waiting | building | indexed | "
                                              "failed: … on the embedded engine), points, indexed_vectors, "
                                              "segments, deleted_unvacuumed, builds, last_build_s and the HNSW settings")


class CollectionList(BaseModel):
    collections: list[CollectionSummary]


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, max_length=256, description="Your document id (a string).")
    text: str = Field(..., description="The document text (long texts are chunked).")
    title: str | None = Field(None, max_length=2000)
    metadata: dict[str, Any] | None = Field(None, description="Any JSON object; filterable by key.")

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return v

    @field_validator("metadata")
    @classmethod
    def _finite(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        _check_json_numbers(v, "metadata")      # NaN/Infinity are not JSON and the engine refuses them
        return v


def _check_json_numbers(value: Any, where: str, depth: int = 0) -> None:
    if depth > 32:
        raise ValueError(f"{where} is nested deeper than 32 levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} holds {value}: metadata numbers must be finite")
    if isinstance(value, dict):
        for k, item in value.items():
            _check_json_numbers(item, f"{where}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_numbers(item, f"{where}[{i}]", depth + 1)


class UpsertDocuments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(..., min_length=1)


class UpsertResponse(BaseModel):
    upserted: int
    chunks: int
    replaced: int
    took_ms: float


class DeleteDocuments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(..., min_length=1)

    @field_validator("ids", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        return v


class DeleteResponse(BaseModel):
    deleted: int
    not_found: list[str]


class DocumentOut(BaseModel):
    id: str
    title: str | None
    text: str
    metadata: dict[str, Any]
    chunks: int


class OptimizeResponse(BaseModel):
    changed: bool
    took_ms: float


class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(..., min_length=1, max_length=4000)


class RagRequest(SearchRequest):
    """A question answered from retrieved passages. Retrieval takes every /search/hybrid parameter."""

    limit: int = Field(5, ge=1, le=20, description="Passages to retrieve and pack into the prompt (1-20).")
    max_tokens: int | None = Field(None, ge=1, le=4096, description="Longest answer in tokens (default: settings).")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling.")
    model: str | None = Field(None, max_length=128, description="llm-service model (default: settings, then its default).")
    context_tokens: int | None = Field(None, ge=32, le=32768,
                                       description="Token budget for the source sentences (default: settings).")
    sentences_per_passage: int | None = Field(None, ge=1, le=20,
                                              description="Most sentences taken from one passage (default: settings).")
    extractive_fallback: bool = Field(True, description="Replace an answer no source sentence supports by the "
                                                        "source sentences closest to the question (marked "
                                                        "answer_type 'extractive'); false: return it as is, "
                                                        "grounded false.")
    messages: list[ChatTurn] | None = Field(None, max_length=20,
                                            description="Earlier turns of the conversation, oldest first (at most "
                                                        "20, 4000 characters each); a follow-up question is made "
                                                        "standalone with them for retrieval.")
    stream: bool = Field(False, description="Stream the answer as server-sent events, sources first.")
    highlight: Literal[False] = Field(False, description="Not for /rag (true is refused with 422): highlight "
                                                        "applies to the /search endpoints.")

    @field_validator("highlight", mode="before")
    @classmethod
    def _no_highlight(cls, v: Any) -> Any:
        if v is True:
            raise ValueError("highlight applies to the /search endpoints, not /rag")
        return v


class RagSource(BaseModel):
    id: str
    title: str | None = None
    score: float
    sentences: list[str] = Field([], description="The sentences of this source the prompt carried.")


class CitationSource(BaseModel):
    id: str
    sentence: str = Field(description="The source sentence that supports the cited span.")
    score: float = Field(description="Cosine of the span and that sentence (embedding model).")


class Citation(BaseModel):
    start: int = Field(description="Start of the cited span in `answer` (characters).")
    end: int = Field(description="End of the span (exclusive).")
    text: str
    sources: list[CitationSource]


class RagGrounding(BaseModel):
    model: str = Field(description="The embedding model that matched sentences (context, citations, the extractive "
                                   "answer): minilm when it covers the question's and the sources' scripts, else "
                                   "one that does (multilingual-e5-small for Korean).")
    threshold: float = Field(description="Its support threshold: a citation's source sentence is at least this close.")


class RagResponse(BaseModel):
    answer: str
    answer_type: Literal["generated", "extractive"] = Field(
        description="generated: the model's text; extractive: source sentences that replace an ungrounded answer.")
    grounded: bool = Field(description="At least one sentence of the generated answer is supported by a source.")
    citations: list[Citation]
    grounding: RagGrounding
    generated_answer: str | None = Field(None, description="The model's text, when an extractive answer replaced it.")
    replaced_because: Literal["unsupported", "empty", "stub", "echo"] | None = Field(
        None, description="Why the generated text was replaced: no source supports it, or it is no answer (empty, "
                          "a stub like 'The answer is:', the question repeated).")
    query: str = Field(description="The query retrieval used (a follow-up is made standalone with the history).")
    finish_reason: str | None = None
    model: str | None = None
    sources: list[RagSource]
    usage: dict[str, int] | None = None
    retrieval_ms: float
    took_ms: float


class EmbeddingsRequest(BaseModel):
    """OpenAI's ``POST /v1/embeddings`` (the fields this server implements; others are refused by name)."""
    model_config = ConfigDict(extra="allow")        # unknown fields: 400 naming them (routes/embeddings.py)

    input: str | list[str] = Field(..., description="A text or a list of up to 256 texts.")
    model: str = Field(..., max_length=256, description="The embedding model (GET /v1/models lists it).")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32 bytes.")
    dimensions: int | None = Field(None, ge=1, description="Only the model's own dimension is accepted.")
    user: str | None = Field(None, max_length=256, description="Accepted; changes nothing.")


class EmbeddingItem(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingsUsage


class EmbeddingModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    dimensions: int


class EmbeddingModelList(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingModelCard]
