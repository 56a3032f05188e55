"""Fixtures for the search-service HTTP tests (star-imported by this package's conftest.py).

One app is shared by the session, served in this process (``create_app(Settings(...))`` behind
Starlette's TestClient: an ``httpx.Client`` over an ASGI transport, the lifespan run on entry and exit) on
the embedded engine in a temp data dir, real Redis and the real embedder, with one small collection:
SciFact documents relevant to a handful of test queries, other SciFact documents, and a few Korean
documents written here. Tests where a real process is the point (kills, signals, restarts, HTTP framing,
tools that need a URL) start one with ``start_service``.
"""
from __future__ import annotations

import fcntl
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from stack_dev import beir
from stack_dev.procs import ServiceProcess
from tests.inprocess import serve_app

REPO = Path(__file__).resolve().parents[2]
SCIFACT = Path("/work/shared/data/beir/scifact")
N_QUERIES = 12        # test queries whose relevant documents are loaded
N_DOCS = 40           # SciFact documents in the fixture corpus

KOREAN_DOCS = [
    {"id": "ko-1", "title": "김치의 발효 과정",
     "text": "김치는 배추와 무를 소금에 절인 뒤 고춧가루, 마늘, 젓갈로 버무려 발효시킨 한국의 전통 음식이다. "
             "발효 과정에서 유산균이 증식하여 새콤한 맛이 생긴다."},
    {"id": "ko-2", "title": "서울의 지하철",
     "text": "서울 지하철은 수도권의 주요 대중교통 수단으로 하루 수백만 명의 승객이 이용한다. "
             "노선은 번호와 색깔로 구분된다."},
    {"id": "ko-3", "title": "당뇨병과 인슐린",
     "text": "당뇨병은 인슐린 분비가 부족하거나 인슐린 저항성이 생겨 혈당이 높아지는 대사 질환이다. "
             "규칙적인 운동과 식단 조절이 혈당 관리에 도움이 된다."},
    {"id": "ko-4", "title": "한글의 창제",
     "text": "한글은 1443년 세종대왕이 백성을 위해 만든 문자로, 자음과 모음을 조합하여 음절을 표기한다."},
]


def load_fixture_corpus() -> tuple[list[dict], list[dict]]:
    """(documents for the API, [{query, relevant doc ids}]) — deterministic."""
    qrels = {q: beir.relevant(rels) for q, rels in beir.read_qrels(SCIFACT / "qrels" / "test.tsv").items()
             if beir.relevant(rels)}
    queries = beir.read_queries(SCIFACT)
    corpus = beir.read_corpus(SCIFACT)
    chosen = [q for q in sorted(qrels, key=int) if q in queries][:N_QUERIES]
    wanted: list[str] = []
    for q in chosen:
        wanted += sorted(qrels[q])
    wanted = list(dict.fromkeys(wanted))      # a document can be relevant to two queries
    rng = random.Random(7)
    others = [d for d in sorted(corpus) if d not in wanted]
    wanted += rng.sample(others, N_DOCS - len(wanted))
    docs = []
    for i, did in enumerate(wanted):
        d = corpus[did]
        docs.append({"id": did, "title": d["title"], "text": d["text"],
                     "metadata": {"source": "scifact", "lang": "en", "year": 2015 + i % 5,
                                  "tags": ["even" if i % 2 == 0 else "odd", f"g{i % 3}"]}})
    for i, d in enumerate(KOREAN_DOCS):
        docs.append({**d, "metadata": {"source": "handmade", "lang": "ko", "year": 2020 + i, "tags": ["ko"]}})
    return docs, [{"query": queries[q], "relevant": sorted(qrels[q])} for q in chosen]


KOREAN_EVAL = REPO / "scripts" / "data" / "korean_eval"


def korean_subset(n_topics: int = 4) -> tuple[list[dict], list[dict]]:
    """A few topics of the project's Korean set: their passages (for the API) and the questions about them
    ``[{query, relevant}]`` (one answering passage each)."""
    import json

    corpus = [json.loads(line) for line in (KOREAN_EVAL / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    queries = {q["_id"]: q for q in map(json.loads,
                                        (KOREAN_EVAL / "queries.jsonl").read_text(encoding="utf-8").splitlines())}
    topics = sorted({d["_id"].split("-")[0] for d in corpus})[:n_topics]
    docs = [{"id": d["_id"], "title": d.get("title"), "text": d["text"]} for d in corpus
            if d["_id"].split("-")[0] in topics]
    ids = {d["id"] for d in docs}
    rel = [line.split("\t") for line in (KOREAN_EVAL / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    return docs, [{"query": queries[q]["text"], "relevant": d} for q, d, _ in rel if d in ids]


def service_env(data_dir: Path, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {"SEARCH_DATA_DIR": str(data_dir), "SEARCH_REDIS_URL": redis_url, "SEARCH_CACHE_PREFIX": prefix,
           "SEARCH_LOG_JSON": "true", "SEARCH_REDIS_TIMEOUT_S": "0.2"}
    env.update(extra)
    return env


def start_service(tmp: Path, env: dict[str, str], name: str = "search") -> ServiceProcess:
    return ServiceProcess("search_service.main:create_app", env=env, log_path=tmp / f"{name}.log",
                          ready_path="/readyz").start(timeout=180)


def app_settings(data_dir: Path, redis_url: str, prefix: str, **extra):
    """The in-process counterpart of ``service_env``: the same settings, passed explicitly."""
    from search_service.core.settings import Settings

    return Settings(**{"data_dir": data_dir, "redis_url": redis_url, "cache_prefix": prefix, "log_json": True,
                       "redis_timeout_s": 0.2, "models_dir": REPO / "models", **extra})




@contextmanager
def serve_in_process(settings) -> Iterator[httpx.Client]:
    """``search_service.main.create_app(settings)`` in this process (tests/inprocess.serve_app: a TestClient
    whose context runs the lifespan; on exit, every thread the app started must have ended). Closing must
    also release the embedded engine's data-dir flock: checked here."""
    from search_service.main import create_app

    with serve_app(create_app(settings), threads_from="startup") as client:
        yield client
    if not settings.qdrant_url:
        with open(Path(settings.data_dir) / ".lock", "a+") as fh:          # raises if still held
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh, fcntl.LOCK_UN)


def ingest(client: httpx.Client, collection: str, docs: list[dict], batch: int = 32) -> None:
    for start in range(0, len(docs), batch):
        r = client.post(f"/collections/{collection}/documents", json={"documents": docs[start:start + batch]})
        assert r.status_code == 200, r.text


@pytest.fixture(scope="session")
def fixture_corpus() -> tuple[list[dict], list[dict]]:
    return load_fixture_corpus()


@pytest.fixture(scope="session")
def search_settings(tmp_path_factory, redis_url):
    """Settings of the shared session app (tests read e.g. its cache prefix)."""
    tmp = tmp_path_factory.mktemp("search-svc")
    return app_settings(tmp / "data", redis_url, "tsearch-" + tmp.name, max_body_bytes=2_000_000)


@pytest.fixture(scope="session")
def client(search_settings):
    with serve_in_process(search_settings) as c:
        yield c


@pytest.fixture(scope="session")
def loaded(client, fixture_corpus) -> str:
    """Name of the shared collection holding the fixture corpus (read-only for tests)."""
    docs, _ = fixture_corpus
    name = "fixture"
    r = client.post("/collections", json={"name": name})
    assert r.status_code == 201, r.text
    ingest(client, name, docs)
    return name
