"""A real service for the tests (servicekit.Service): each test gets its own Redis namespace and data
directory, so runs never see each other's jobs; keys are deleted afterwards."""

from __future__ import annotations

import pytest
import redis
from servicekit import REDIS_URL, Service


@pytest.fixture(scope="session")
def redis_client():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the tests need a Redis at {REDIS_URL} ({exc}); .ci/run starts one")
    return client


@pytest.fixture
def service_factory(tmp_path, redis_client):
    started = []

    def make(**env) -> Service:
        svc = Service(tmp_path / f"svc{len(started)}", {k: str(v) for k, v in env.items()})
        svc.root.mkdir(parents=True)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()
        for key in redis_client.scan_iter(f"{svc.namespace}*", count=1000):
            redis_client.delete(key)


@pytest.fixture
def service(service_factory) -> Service:
    """API + one CPU worker, running."""
    svc = service_factory()
    svc.start_api()
    svc.start_workers()
    return svc
