"""ServerStore: qdrant-client's AsyncQdrantClient. Contract tests on local mode (the same client API a server
gets), and the server path's failure behaviour against addresses where no Qdrant answers."""
from __future__ import annotations

import inspect
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm
from qdrant_client.async_qdrant_remote import AsyncQdrantRemote
from search_service.collections import CollectionCatalog
from search_service.core.settings import Settings
from search_service.store import SparseVector, Unavailable, VectorStore, make_store
from search_service.store.base import Distribution
from stack_common.errors import InvalidRequest, ServiceError
from stack_common.http_errors import http_status
from search_service.store.server import ServerStore, create_kwargs, create_request, distribution_of

from .store_contract import StoreContract
from .store_data import DIM, load_docs, make_points


class TestServerContract(StoreContract):
    def open(self, path: Path) -> VectorStore:
        store = make_store(qdrant_url=f"local:{path / 'qdrant'}", data_dir=path)
        assert isinstance(store, ServerStore)
        return store


async def test_memory_mode_from_factory(tmp_path: Path) -> None:
    store = make_store(qdrant_url=":memory:", data_dir=tmp_path)
    assert isinstance(store, ServerStore) and await store.ready()
    await store.create_collection("c", DIM, {"model_id": "m"})
    assert [(c.name, c.meta) for c in await store.list_collections()] == [("c", {"model_id": "m"})]
    await store.close()
    assert not any(tmp_path.iterdir())                                # nothing written in memory mode


def test_factory_rejects_unknown_urls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="qdrant_url"):
        make_store(qdrant_url="qdrant.example:6333", data_dir=tmp_path)


async def _assert_unavailable(store: VectorStore, url: str, every_call: bool = True) -> None:
    assert await store.ready() is False
    calls = [store.get_collection("c"), store.search_sparse("c", SparseVector([1], [1.0]), 3)]
    if every_call:
        calls += [store.list_collections(), store.create_collection("c", DIM, {}), store.count("c"),
                  store.upsert("c", make_points(load_docs(2))), store.delete_collection("c")]
    for call in calls:
        with pytest.raises(Unavailable, match=f"Qdrant at {url} is unreachable") as err:
            await call
        assert http_status(err.value) == 503


@pytest.mark.timeout(30)
async def test_closed_port_is_unavailable() -> None:
    with socket.socket() as s:                                       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    store = make_store(qdrant_url=url, data_dir=Path("/nonexistent"), timeout_s=1.0)
    try:
        await _assert_unavailable(store, url)
    finally:
        await store.close()


@pytest.mark.timeout(30)
async def test_silent_server_times_out_as_unavailable() -> None:
    """A peer that accepts connections but never answers: bounded by timeout_s (qdrant-client rounds it up
    to whole seconds), then 503."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        store = make_store(qdrant_url=url, data_dir=Path("/nonexistent"), timeout_s=0.3)
        try:
            await _assert_unavailable(store, url, every_call=False)
        finally:
            await store.close()


# -- distributed collections (server mode) -----------------------------------------------------------
# No Qdrant server runs in the tests, and qdrant-client's local mode swallows shard_number and friends:
# the request ServerStore sends is built by pure functions, checked here against Qdrant's REST model and
# the client's own signature; local mode itself refuses any layout but one shard (store_contract.py).

def test_create_request_carries_the_layout() -> None:
    body = create_request(8, {"model_id": "m"}, Distribution(3, 2, 1)).model_dump(mode="json", exclude_none=True)
    assert body == {"vectors": {"dense": {"size": 8, "distance": "Cosine"}},
                    "sparse_vectors": {"bm25": {"modifier": "idf"}},
                    "shard_number": 3, "replication_factor": 2, "write_consistency_factor": 1,
                    "metadata": {"model_id": "m"}}
    local = create_request(8, {}, None).model_dump(mode="json", exclude_none=True)
    assert not {"shard_number", "replication_factor", "write_consistency_factor"} & set(local)


def test_create_kwargs_are_named_parameters_of_the_client() -> None:
    """Every keyword ServerStore passes is a named parameter of the client (``**kwargs`` would swallow a
    misspelt one), and the remote client rebuilds exactly our request from them."""
    request = create_request(8, {"model_id": "m"}, Distribution(6, 3, 2))
    kwargs = create_kwargs(request)
    for fn in (AsyncQdrantClient.create_collection, AsyncQdrantRemote.create_collection):
        named = {n for n, p in inspect.signature(fn).parameters.items() if p.kind is not p.VAR_KEYWORD}
        assert set(kwargs) <= named, set(kwargs) - named
    assert (kwargs["shard_number"], kwargs["replication_factor"], kwargs["write_consistency_factor"]) == (6, 3, 2)
    rebuilt = qm.CreateCollection(vectors=kwargs["vectors_config"], sparse_vectors=kwargs["sparse_vectors_config"],
                                  shard_number=kwargs["shard_number"], replication_factor=kwargs["replication_factor"],
                                  write_consistency_factor=kwargs["write_consistency_factor"],
                                  metadata=kwargs["metadata"])          # as AsyncQdrantRemote.create_collection does
    assert rebuilt == request


async def test_layout_is_read_back_from_config_params(tmp_path: Path) -> None:
    """A server reports the layout in ``config.params``; local mode leaves it unset (one shard)."""
    assert distribution_of(qm.CollectionParams(shard_number=3, replication_factor=2,
                                               write_consistency_factor=1)) == Distribution(3, 2, 1)
    store = make_store(qdrant_url=":memory:", data_dir=tmp_path)
    try:
        await store.create_collection("c", 8, {})
        raw = await store._client.get_collection("c")                  # what the client returns, as is
        assert raw.config.params.shard_number is None
        assert distribution_of(raw.config.params) == Distribution(1, 1, 1)
        assert (await store.get_collection("c")).distribution == Distribution(1, 1, 1)
    finally:
        await store.close()


async def test_server_store_is_distributed_and_checks_the_layout_first() -> None:
    """Against a URL the layout goes to the server (here: nobody listens, so 503 after the checks); an
    impossible layout is a 400 before any call."""
    store = make_store(qdrant_url="http://127.0.0.1:9", data_dir=Path("/nonexistent"), timeout_s=1.0)
    try:
        assert store.distributed is True
        with pytest.raises(ServiceError, match="must not exceed replication_factor") as err:
            await store.create_collection("c", 8, {}, Distribution(3, 1, 2))
        assert http_status(err.value) == 400
        with pytest.raises(Unavailable):
            await store.create_collection("c", 8, {}, Distribution(3, 2, 1))
    finally:
        await store.close()


async def test_catalog_layout_defaults_from_the_settings_in_server_mode() -> None:
    settings = Settings(qdrant_url="http://127.0.0.1:9", qdrant_shard_number=3, qdrant_replication_factor=2,
                        qdrant_write_consistency_factor=2)
    store = ServerStore(url="http://127.0.0.1:9")
    try:
        catalog = CollectionCatalog(store, None, None, None, settings)
        assert catalog.distribution() == Distribution(3, 2, 2)
        assert catalog.distribution(shard_number=6) == Distribution(6, 2, 2)
        assert catalog.distribution(replication_factor=1) == Distribution(3, 1, 1)    # default wcf capped
        assert catalog.distribution(replication_factor=3, write_consistency_factor=3) == Distribution(3, 3, 3)
        with pytest.raises(InvalidRequest, match="write_consistency_factor \\(3\\) must not exceed") as err:
            catalog.distribution(write_consistency_factor=3)
        assert http_status(err.value) == 422 and err.value.details == {"param": "write_consistency_factor"}
        local_store = make_store(qdrant_url=":memory:", data_dir=Path("/nonexistent"))
        local = CollectionCatalog(local_store, None, None, None, Settings(qdrant_url=":memory:"))
        assert local.distribution() == Distribution(1, 1, 1)     # one process: the settings do not apply
        await local_store.close()
    finally:
        await store.close()


def test_layout_settings_need_a_server() -> None:
    for url in (None, ":memory:", "local:/tmp/x"):
        with pytest.raises(ValidationError, match="qdrant_replication_factor=2 needs a Qdrant server"):
            Settings(qdrant_url=url, qdrant_replication_factor=2)
    with pytest.raises(ValidationError, match="must not exceed qdrant_replication_factor"):
        Settings(qdrant_url="http://q:6333", qdrant_write_consistency_factor=2)
    s = Settings(qdrant_url="https://q:6333", qdrant_shard_number=6, qdrant_replication_factor=3,
                 qdrant_write_consistency_factor=2)
    assert (s.qdrant_shard_number, s.qdrant_replication_factor, s.qdrant_write_consistency_factor) == (6, 3, 2)


async def test_index_status_reports_the_servers_own_state(tmp_path: Path) -> None:
    store = make_store(qdrant_url=":memory:", data_dir=tmp_path)
    try:
        await store.create_collection("c", DIM, {})
        await store.upsert("c", make_points(load_docs(30)))
        status = await store.index_status("c")
        assert status["points"] == 30 and status["auto"] is True
        assert status["state"] in ("indexed", "building", "waiting") and status["server_status"]
    finally:
        await store.close()
