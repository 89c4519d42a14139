"""Real servers for integration and end-to-end tests: redis-server, the database, the API under uvicorn, and
worker processes or in-thread workers. Loopback only, ephemeral ports, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from envoi.settings import Settings, load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"envoi_t_{uuid.uuid4().hex[:10]}"
    url = admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_settings(tmp: Path, database_url: str, redis_url: str, **env: str) -> Settings:
    base = {
        "ENVOI_VAR_DIR": str(tmp / "var"),
        "ENVOI_DATABASE_URL": database_url,
        "ENVOI_REDIS_URL": redis_url,
        "ENVOI_SIGNING_KEYS": "test-signing-key-0123456789-abcdefghijklmnop",
        "ENVOI_METRICS_PORT": "0",
        "ENVOI_PARTITIONS": "4",
        "ENVOI_RETRY_BASE_SECONDS": "0.2",
        "ENVOI_RETRY_CAP_SECONDS": "1",
        "ENVOI_RECLAIM_IDLE_SECONDS": "3",
        "ENVOI_ADMIN_KEY": "admin-test-key",
    }
    base.update(env)
    return load_settings(base)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that reproduces `settings` in a child process."""
    env = dict(os.environ)
    env.update({
        "ENVOI_VAR_DIR": str(settings.var_dir), "ENVOI_DATABASE_URL": settings.database_url,
        "ENVOI_REDIS_URL": settings.redis_url, "ENVOI_SIGNING_KEYS": ",".join(settings.signing_keys),
        "ENVOI_METRICS_PORT": "0", "ENVOI_PARTITIONS": str(settings.partitions),
        "ENVOI_SMTP_HOST": settings.smtp.host, "ENVOI_SMTP_PORT": str(settings.smtp.port),
        "ENVOI_RETRY_BASE_SECONDS": str(settings.retry_base_s), "ENVOI_RETRY_CAP_SECONDS": str(settings.retry_cap_s),
        "ENVOI_RECLAIM_IDLE_SECONDS": str(settings.reclaim_idle_s),
        "ENVOI_BATCH_SIZE": str(settings.batch_size), "ENVOI_PUBLIC_URL": settings.public_url,
    })
    env.update(extra)
    return env


class ApiServer:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        from envoi.app import create_app
        from envoi.composition import api_services

        self.port = free_port()
        self.app = create_app(settings, api_services(settings, engine))
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        wait_until(lambda: self.server.started, 15, message="uvicorn start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class ThreadWorker:
    """A Worker running its own event loop in a thread (fast to start; for tests that do not kill it)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.worker: Any = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        from envoi.composition import make_redis
        from envoi.worker import Worker, build_transport

        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            from envoi.composition import dispatch_hooks

            redis = make_redis(self.settings)
            hooks = dispatch_hooks(self.settings, self.engine, redis)
            self.customize(hooks, redis)
            self.worker = Worker(self.settings, self.engine, redis, self.make_transport(build_transport(self.settings)),
                                 hooks=hooks)
            self._ready.set()
            try:
                await self.worker.run()
            finally:
                await redis.aclose()

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by __exit__
            self.error = exc
            self._ready.set()

    def make_transport(self, transport: Any) -> Any:
        """Override to wrap the configured email transport (e.g. to record hand-offs)."""
        return transport

    def customize(self, hooks: Any, redis: Any) -> None:
        """Override to change the worker's hooks (e.g. the SMS road aimed at a test server)."""

    def __enter__(self) -> ThreadWorker:
        self.thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.worker is not None:
            self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(30)
        if self.error is not None:
            raise self.error


class WorkerProcess:
    """`envoi worker` as a real child process (for crash tests)."""

    def __init__(self, settings: Settings, index: int = 0, **env: str) -> None:
        self.env = settings_env(settings, **env)
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(settings.var_dir) / f"worker-{index}-{uuid.uuid4().hex[:4]}.log"

    def start(self) -> WorkerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "envoi", "worker", "--index", str(self.index)],
                                     env=self.env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)
