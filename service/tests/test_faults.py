"""Issue 7's fault drills, a few of each (benchmarks/reliability.py runs the full count: 50 worker
kills, 5 Redis restarts, 5 API restarts, 5 races, the disk-full drill). Real processes, real
Redis (a second redis-server of our own with an append-only file for the restarts), loopback.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess

import pytest

from benchmarks.reliability import (OwnRedis, api_restart_drill, disk_full_drill, kill_worker_drill, mount_tmpfs,
                                    orphans, race_drill, redis_restart_drill)


def test_kill_minus_9_the_worker_at_random_moments(service, spot_small):
    rng = random.Random(1)
    runs = [kill_worker_drill(service, spot_small.capture, rng, max_delay=5.0) for _ in range(3)]
    for run in runs:
        assert run["status"] in ("succeeded", "failed") and not run["problems"], run
        if run["status"] == "failed":
            assert run["error"] == "WORKER_LOST", run
    assert not [j for j in service.http.get("/jobs").json()["jobs"]
                if j["status"] not in ("succeeded", "failed", "cancelled")]
    assert not orphans()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server for a Redis of its own")
def test_redis_restarts_lose_no_job(service_factory, spot_small, tmp_path):
    own = OwnRedis(tmp_path / "own-redis")
    own.start()
    try:
        svc = service_factory(MESHFORGE_REDIS_URL=own.url)
        svc.start_api()
        svc.start_workers()
        rng = random.Random(2)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            run = redis_restart_drill(svc, own, spot_small.capture, rng, sig)
            assert run["status"] == "succeeded" and not run["problems"], run
    finally:
        own.stop(signal.SIGKILL)


def test_api_killed_mid_job_and_mid_upload(service_factory, spot_small):
    svc = service_factory(MESHFORGE_STALE_UPLOAD_S="3")
    svc.start_api()
    svc.start_workers()
    run = api_restart_drill(svc, spot_small.capture, random.Random(3))
    assert run["status"] == "succeeded" and not run["problems"], run


def test_cancel_download_and_status_races_are_consistent(service, spot_small):
    run = race_drill(service, spot_small.capture, cancel_after=0.5)
    assert not run["problems"], run
    assert run["status"] == "cancelled" or run["status"] == "succeeded", run


def test_disk_full_is_storage_full_and_no_corrupt_bundle(service_factory, spot_small, tmp_path):
    """The data directory on a 32 MiB tmpfs, filled (mounting needs root, as in CI and here)."""
    svc = service_factory()
    data = svc.root / "data"
    if not mount_tmpfs(data, "32m"):
        pytest.skip("cannot mount a tmpfs here (needs root); benchmarks/reliability.py --disk has the same drill")
    try:
        svc.start_api()
        svc.start_workers()
        out = disk_full_drill(svc, spot_small.capture)
        assert out["upload"]["code"] == "STORAGE_FULL" and out["upload"]["status"] == 507, out
        assert out["job"] == {"status": "failed", "codes": ["STORAGE_FULL"]}, out
        assert not out["problems"], out
    finally:
        svc.stop()
        subprocess.run(["umount", "-l", str(data)])


def test_a_job_whose_message_cannot_be_queued_is_undone(service_factory, redis_client, spot_small):
    """The job record is written, then Redis refuses to queue its message: the API must not leave a
    job that stays queued forever. Provoked for real: the API connects as a Redis ACL user that may
    run every command except scripts, and the broker queues messages with a Lua script while the
    job store writes its record with plain commands."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    from servicekit import REDIS_URL

    user, password = f"meshforge-noscripts-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    redis_client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                             commands=["+@all", "-@scripting"])
    try:
        parts = urlsplit(REDIS_URL)
        url = urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port or 6379}"))
        svc = service_factory(MESHFORGE_REDIS_URL=url)
        svc.start_api()
        r = svc.http.post("/jobs", files={"file": ("c.zip", spot_small.capture.read_bytes(), "application/zip")})
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE", error
        assert error["details"]["component"] == "the job queue", error
        assert "no permissions to run the 'evalsha' command" in error["message"], error
        # nothing half-made is left: no job record, no entry in the lists, no stored upload
        assert list(redis_client.scan_iter(f"{svc.namespace}:job:*")) == []
        assert redis_client.zcard(f"{svc.namespace}:jobs") == 0
        jobs_dir = svc.root / "data" / "jobs"
        assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []
        assert svc.http.get("/jobs").json()["jobs"] == []
        assert svc.http.get("/health").status_code == 200  # and the API goes on serving
    finally:
        redis_client.acl_deluser(user)
