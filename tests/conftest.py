from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_DB = os.environ.get("ENVOI_TEST_DB", "sqlite")


def pytest_report_header(config: pytest.Config) -> str:
    return f"envoi test database: {TEST_DB}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from envoi.redis_server import RedisServer

    server = RedisServer(Path(tmp_path_factory.mktemp("redis")), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: object) -> str:
    import redis

    url: str = redis_server.url  # type: ignore[attr-defined]
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    return url


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    if TEST_DB == "postgresql":
        from tests.support.stack import postgres_database

        admin = os.environ.get("ENVOI_TEST_POSTGRES_URL")
        if not admin:
            pytest.fail("ENVOI_TEST_DB=postgresql needs ENVOI_TEST_POSTGRES_URL")
        with postgres_database(admin) as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'envoi.db'}"
