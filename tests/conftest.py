"""Fixtures shared by every test package."""
from __future__ import annotations

import os
import uuid

import pytest
import redis

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis (make test starts one if none answers). Tests use DB 15 and unique key prefixes."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    client.ping()
    client.close()
    return REDIS_URL


@pytest.fixture
def unique_name() -> str:
    """A collection/key-prefix name no other test (or concurrent run) uses."""
    return "t" + uuid.uuid4().hex[:12]
