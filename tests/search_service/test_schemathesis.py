"""Property-based bad input against the search-service's OpenAPI spec over real HTTP: no 5xx, every response
conforms to its documented schema. Runs on its own service process (the fuzzer creates, fills and deletes
collections, which must not disturb the shared fixture collection), with one small collection loaded so
searches reach the retrieval code, not only the 404 path. /rag talks to a real llm-service on the tiny model
(without one, /rag's 503 "llm-service unreachable" is by design and would count as a server error).

/rag is fuzzed too: its passage packing estimates 4 characters a token, which undercounts digits, symbols
and Korean; when llm-service says the prompt does not fit, rag.py re-packs to the model's own count (this
test found the overflow as a 502 before that)."""
import httpx

from tests.conftest import TINY_NAME
from tests.llm_service.conftest import start_llm
from tests.schemathesis_run import run_schemathesis
from tests.search_service.service_fixtures import KOREAN_DOCS, ingest, service_env, start_service

def test_search_service_openapi_fuzz(tmp_path, redis_url, unique_name, tiny_model_dir, tmp_path_factory):
    llm = start_llm(tmp_path_factory, tiny_model_dir, "fuzz-rag", default_model=TINY_NAME)
    proc = start_service(tmp_path, service_env(tmp_path / "data", redis_url, unique_name, SEARCH_LLM_URL=llm.url),
                         name="fuzz")
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            for name in ("docs", "string"):          # a realistic name and the fuzzer's favourite example
                assert c.post("/collections", json={"name": name}).status_code == 201
                ingest(c, name, KOREAN_DOCS + [{"id": "en-1", "text": "hybrid search over documents"}])
        run_schemathesis(proc.url, tmp_path, max_examples=25)
        assert httpx.get(proc.url + "/readyz", timeout=10).status_code == 200
    finally:
        proc.stop()
        llm.stop()
    assert "unhandled error" not in (tmp_path / "fuzz.log").read_text()
