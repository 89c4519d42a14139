"""`envoi run`: the whole engine on its embedded defaults, in one command.

Starts a redis-server on a unix socket under var/ (unless ENVOI_REDIS_URL is set), the capture SMTP inbox
(unless a relay is configured), migrates the database, then the API and the worker processes. Ctrl-C: the workers
stop claiming and drain in-flight sends until the deadline; what is left stays queued for the next start."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from envoi.capture_smtp import CaptureSmtp
from envoi.composition import database
from envoi.redis_server import RedisServer
from envoi.settings import Settings

log = logging.getLogger(__name__)


class Stack:
    def __init__(self, settings: Settings, quiet: bool = False) -> None:
        self.settings = settings
        self.quiet = quiet
        self.redis: RedisServer | None = None
        self.capture: CaptureSmtp | None = None
        self.children: list[subprocess.Popen[bytes]] = []

    @property
    def uses_capture(self) -> bool:
        s = self.settings
        return s.smtp.host in ("127.0.0.1", "localhost") and s.smtp.port == s.capture_smtp_port \
            and "ENVOI_SMTP_HOST" not in os.environ

    def start(self) -> None:
        s = self.settings
        s.var_dir.mkdir(parents=True, exist_ok=True)
        if not s.redis_url:
            self.redis = RedisServer(s.var_dir).start()
        if self.uses_capture:
            self.capture = CaptureSmtp(s.var_dir / "outbox", port=s.capture_smtp_port).start()
        database(s).dispose()  # migrate once, before any process uses the schema
        env = dict(os.environ, ENVOI_VAR_DIR=str(s.var_dir))
        out = subprocess.DEVNULL if self.quiet else None
        self.children.append(subprocess.Popen(
            [sys.executable, "-m", "envoi", "api"], env=env, stdout=out, stderr=out))
        for i in range(s.workers):
            self.children.append(subprocess.Popen(
                [sys.executable, "-m", "envoi", "worker", "--index", str(i)], env=env, stdout=out, stderr=out))
        # issue 4: the inbound SMTP listener (DSNs at the VERP return-paths, ARF reports, mailto unsubscribe)
        self.children.append(subprocess.Popen(
            [sys.executable, "-m", "envoi", "inbound"], env=env, stdout=out, stderr=out))

    def wait_ready(self, timeout: float = 30.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        url = f"http://{self.settings.api_host}:{self.settings.api_port}/readyz"
        while time.monotonic() < deadline:
            for child in self.children:
                if child.poll() is not None:
                    raise RuntimeError(f"a child process exited with {child.returncode}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"API not ready at {url} after {timeout}s")

    def alive(self) -> bool:
        return all(c.poll() is None for c in self.children)

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_deadline_s + 5
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()
        if self.capture:
            self.capture.stop()
        if self.redis:
            self.redis.stop()


def run_forever(settings: Settings) -> None:
    stack = Stack(settings)
    stack.start()
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.wait_ready()
        base = f"http://{settings.api_host}:{settings.api_port}"
        print(f"\nEnvoi is running.\n  API:       {base}  (OpenAPI: {base}/docs, {base}/openapi.json)\n"
              f"  metrics:   {base}/metrics\n  outbox:    {Path(settings.var_dir, 'outbox').resolve()}\n"
              f"  API key:   .venv/bin/envoi accounts create \"My company\"\n  Ctrl-C to stop.\n", flush=True)
        while not stopping and stack.alive():
            time.sleep(0.2)
    finally:
        print("stopping: draining in-flight sends...", flush=True)
        stack.stop()
