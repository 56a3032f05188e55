"""ServerStore: qdrant-client's AsyncQdrantClient. Contract tests on local mode (the same client API a server
gets), and the server path's failure behaviour against addresses where no Qdrant answers."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
from search_service.store import SparseVector, Unavailable, VectorStore, make_store
from stack_common.http_errors import http_status
from search_service.store.server import ServerStore

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
