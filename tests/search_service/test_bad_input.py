"""Hostile and malformed input to the search-service: every case gets a clear 4xx or is stored and returned
verbatim; never a 5xx. Most cases go to the shared session app (in-process, through an ASGI transport); the
ones about what a real HTTP server does with the bytes on the wire (chunked framing, percent-escapes in the
path) go to a real service process."""
from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import httpx
import pytest

from tests.search_service.service_fixtures import service_env, start_service

INJECTION_IDS = ["x'; DROP TABLE docs;--", '{"$ne": null}', "../../etc/passwd", "a\"b\\c", "<script>alert(1)</script>",
                 "%2e%2e%2f", "1 OR 1=1", "문서-한국어 ✓", "emoji-🙂"]


@pytest.fixture(scope="module")
def coll(client):
    name = "bad" + uuid.uuid4().hex[:10]
    assert client.post("/collections", json={"name": name}).status_code == 201
    return name


@pytest.fixture(scope="module")
def http_coll(tmp_path_factory, redis_url):
    """(client of a real service process over HTTP, a collection of it), same settings as the session app."""
    tmp = tmp_path_factory.mktemp("bad-input-http")
    proc = start_service(tmp, service_env(tmp / "data", redis_url, "tbad-" + tmp.name,
                                          SEARCH_MAX_BODY_BYTES="2000000"), "bad-input")
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            assert c.post("/collections", json={"name": "bad"}).status_code == 201
            yield c, "bad"
    finally:
        proc.stop()


def chunked_upload() -> dict:
    """A 2.6 MB upload as an iterator: httpx sends it chunked (no Content-Length), 64 KiB a chunk."""
    return dict(content=iter([b'{"documents": [{"id": "x", "text": "'] + [b"a" * 65536] * 40 + [b'"}]}']),
                headers={"content-type": "application/json"})


def test_huge_body_413(client, coll):
    big = "a" * 2_100_000                                    # over the fixture service's 2 MB limit
    r = client.post("/search/hybrid", content=json.dumps({"query": big, "collection": coll}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    # no Content-Length: counted as it is received (the ASGI transport hands the app the body at once)
    r = client.post(f"/collections/{coll}/documents", **chunked_upload())
    assert r.status_code == 413


def test_chunked_huge_body_413_over_real_http(http_coll):
    """Chunked framing is the HTTP server's to decode: over a real socket the chunks reach the app one by one
    and the 413 is sent while the client is still sending."""
    client, coll = http_coll
    r = client.post(f"/collections/{coll}/documents", **chunked_upload())       # refused while streaming
    assert r.status_code == 413


def test_deeply_nested_filter_422(client, coll):
    f = {"key": "year", "match": {"value": 2020}}
    for _ in range(12):
        f = {"must": [f]}
    r = client.post("/search/hybrid", json={"query": "x", "collection": coll, "filter": f})
    assert r.status_code == 422 and "deeper" in r.json()["error"]["message"]
    depth = 5000                                            # deeper than Python's default recursion limit
    deep = '{"must": [' * depth + '{"key": "year", "match": {"value": 2020}}' + ']}' * depth
    r = client.post("/search/hybrid", content='{"query": "x", "collection": "%s", "filter": %s}' % (coll, deep),
                    headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text[:300]


@pytest.mark.parametrize("field,value", [("alpha", "NaN"), ("alpha", "Infinity"), ("score_threshold", "-Infinity"),
                                         ("weights", '{"vector": NaN, "keyword": 1}'),
                                         ("weights", '{"vector": 1e999}'), ("rrf_k", "NaN")])
def test_nan_inf_numbers_rejected(client, coll, field, value):
    body = '{"query": "x", "collection": "%s", "%s": %s}' % (coll, field, value)
    r = client.post("/search/hybrid", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text


def test_nan_in_metadata_is_422_not_500(client, coll):
    r = client.post(f"/collections/{coll}/documents", content='{"documents": [{"id": "n1", "text": "t", '
                    '"metadata": {"a": {"b": [1, NaN]}}}]}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "metadata.a.b[1]" in r.json()["error"]["message"]


def test_invalid_utf8_body_4xx(client, coll):
    r = client.post("/search/hybrid", content=b'{"query": "\xff\xfe\xfa", "collection": "' + coll.encode() + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = client.post("/search/hybrid", content=b"\x00\x01garbage", headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


@pytest.mark.parametrize("body", [{"limit": -1}, {"limit": 0}, {"limit": 10**30}, {"offset": -5},
                                  {"offset": 10**12}, {"limit": "ten"}, {"limit": 1.5}])
def test_negative_and_huge_limits(client, coll, body):
    r = client.post("/search/hybrid", json={"query": "x", "collection": coll, **body})
    assert 400 <= r.status_code < 500 or (r.status_code == 200 and r.json()["results"] == []), r.text


def test_injection_ids_and_unicode_round_trip(http_coll):
    """Over real HTTP: an id is percent-escaped in the document URL and the server decodes the path once
    (Starlette's TestClient decodes it twice: ``%252e`` would reach the app as ``.``)."""
    client, coll = http_coll
    docs = [{"id": did, "title": f"제목 {i}", "text": f"injection probe number {i} 서울 지하철 노선 {did}",
             "metadata": {"raw": did, "n": i}} for i, did in enumerate(INJECTION_IDS)]
    r = client.post(f"/collections/{coll}/documents", json={"documents": docs})
    assert r.status_code == 200 and r.json()["upserted"] == len(docs), r.text
    r = client.post("/search/hybrid", json={"query": "injection probe", "collection": coll, "limit": 50})
    assert r.status_code == 200
    got = {hit["id"]: hit for hit in r.json()["results"]}
    assert set(INJECTION_IDS) <= set(got)
    for did in INJECTION_IDS:
        assert got[did]["metadata"]["raw"] == did and got[did]["title"].startswith("제목")
    for did in INJECTION_IDS:
        r = client.get(f"/collections/{coll}/documents/{quote(did, safe='')}")
        assert r.status_code == 200 and r.json()["id"] == did, (did, r.text)
    r = client.post("/search/keyword", json={"query": "서울 지하철", "collection": coll, "limit": 50})
    assert r.status_code == 200 and set(INJECTION_IDS) <= {h["id"] for h in r.json()["results"]}
    r = client.request("DELETE", f"/collections/{coll}/documents", json={"ids": INJECTION_IDS[:2]})
    assert r.status_code == 200
    r = client.post("/search/hybrid", json={"query": "injection probe", "collection": coll, "limit": 50})
    assert not set(INJECTION_IDS[:2]) & {h["id"] for h in r.json()["results"]}
