"""The REST service end to end: real API and worker processes, real Redis, real HTTP, real files."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import zipfile

import httpx
import psutil
import pytest

from tests.helpers import rezip

from servicekit import FAST, free_port


def fusion(models: dict) -> dict:
    return next(r for r in models["reconstructors"] if r["name"] == "fusion")


# ── the happy path ───────────────────────────────────────────────────────────────────────

def test_submit_progress_and_download(service, spot_small):
    job = service.submit(spot_small.capture)
    assert job["status"] == "queued" and set(job["models"]) == {"fusion"}
    assert len(job["job_id"]) >= 22 and job["links"]["download"].endswith("/download")
    seen = []
    with httpx.Client(base_url=service.url, timeout=120) as client:
        with client.stream("GET", f"/jobs/{job['job_id']}/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            for line in events.iter_lines():
                if line.startswith("data: "):
                    state = json.loads(line[6:])
                    seen.append((state["status"], state["models"]["fusion"].get("stage"), state["progress"]))
                    if state["status"] in ("succeeded", "failed", "cancelled"):
                        break
    statuses = [s for s, _, _ in seen]
    assert statuses[-1] == "succeeded", seen
    assert "running" in statuses
    stages = {stage for _, stage, _ in seen}
    assert {"reconstructing", "scoring"} & stages or len(stages) > 2, stages
    progress = [p for _, _, p in seen]
    assert progress == sorted(progress)  # never moves backwards
    done = service.job(job["job_id"])
    assert done["finished_at"] and done["models"]["fusion"]["quality"]["status"] == "normal"
    r = service.http.get(f"/jobs/{job['job_id']}/download")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = set(zf.namelist())
        prefix = job["job_id"]
        for f in ("report.json", "fusion/mesh.glb", "fusion/mesh.obj", "fusion/mesh.mtl", "fusion/texture.png",
                  "fusion/quality.json", "fusion/previews/view_front.png"):
            assert f"{prefix}/{f}" in names, f
        report = json.loads(zf.read(f"{prefix}/report.json"))
    assert report["job_id"] == prefix and report["status"] == "succeeded"
    assert report["models"]["fusion"]["timings"]["reconstruct_total"] > 0
    assert report["input"]["calibration"]["method"] == "known"


def test_models_reflect_the_workers(service_factory):
    svc = service_factory()
    svc.start_api()
    item = fusion(svc.models())
    assert item["available"] is False and "no worker" in item["reason"]
    svc.start_workers()
    item = fusion(svc.models())
    assert item["available"] is True and item["workers"] == 1
    nvdiffrec = next(r for r in svc.models()["reconstructors"] if r["name"] == "nvdiffrec")
    assert nvdiffrec["available"] is False and nvdiffrec["reason"]


def test_listing_is_paginated_newest_first(service, spot_small):
    ids = [service.submit(spot_small.capture)["job_id"] for _ in range(3)]
    page = service.http.get("/jobs", params={"limit": 2}).json()
    assert [j["job_id"] for j in page["jobs"]] == ids[::-1][:2] and page["next_cursor"] is not None
    rest = service.http.get("/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [j["job_id"] for j in rest["jobs"]] == [ids[0]] and rest["next_cursor"] is None
    for job_id in ids:
        service.wait_for(job_id, "succeeded")


def test_idempotency_key_returns_the_same_job(service, spot_small, bob_mesh, tmp_path):
    headers = {"Idempotency-Key": "upload-42"}
    first = service.submit(spot_small.capture, headers=headers)
    again = service.submit(spot_small.capture, headers=headers)
    assert again["job_id"] == first["job_id"]
    other = service.submit(spot_small.capture, options='{"fusion": {"resolution": 64}}', headers=headers, expect=409)
    assert other["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    service.wait_for(first["job_id"], "succeeded")


# ── every error status of the spec ───────────────────────────────────────────────────────

def test_error_statuses(service_factory, spot_small, tmp_path):
    svc = service_factory(MESHFORGE_MAX_UPLOAD_BYTES=spot_small.capture.stat().st_size + 1000)
    svc.start_api()
    svc.start_workers()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"%PDF-1.7 not a zip")
    r = svc.submit(bad, expect=415)
    assert r["error"]["code"] == "NOT_A_ZIP" and "bad.zip" in r["error"]["message"]
    r = svc.http.post("/jobs", json={"file": "x"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    missing = rezip(spot_small.capture, tmp_path / "missing.zip", drop=("multi_views/top.png",))
    r = svc.submit(missing, expect=422)
    assert r["error"]["code"] == "MISSING_VIEW" and r["error"]["details"]["view"] == "top"
    assert svc.submit(spot_small.capture, models="nerf", options=None, expect=400)["error"]["code"] == "UNKNOWN_MODEL"
    assert svc.submit(spot_small.capture, models="nvdiffrec", options=None,
                      expect=503)["error"]["code"] == "MODEL_UNAVAILABLE"
    assert svc.submit(spot_small.capture, options="{nope", expect=422)["error"]["code"] == "INVALID_OPTIONS"
    assert svc.submit(spot_small.capture, options='{"fusion": {"resolution": 5}}',
                      expect=422)["error"]["code"] == "INVALID_OPTIONS"
    big = tmp_path / "big.zip"
    big.write_bytes(spot_small.capture.read_bytes() + b"\0" * 5000)
    assert svc.submit(big, expect=413)["error"]["code"] == "CAPTURE_TOO_LARGE"
    r = svc.http.get("/jobs/no-such-job")
    assert r.status_code == 404 and r.json()["error"]["code"] == "JOB_NOT_FOUND"
    assert svc.http.get("/nowhere").json()["error"]["code"] == "NOT_FOUND"
    r = svc.http.delete("/jobs")
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    # nothing half-written: no job folders, no uploads left for any refused request
    data = svc.root / "data"
    assert not any((data / "jobs").iterdir()) and not any((data / "uploads").iterdir())
    # the service keeps running
    job = svc.submit(spot_small.capture)
    r = svc.http.get(f"/jobs/{job['job_id']}/download")
    assert r.status_code == 409 and r.json()["error"]["code"] == "JOB_NOT_FINISHED"
    svc.wait_for(job["job_id"], "succeeded")
    r = svc.http.post(f"/jobs/{job['job_id']}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "JOB_ALREADY_FINISHED"


def test_ready_says_when_redis_is_unreachable(service_factory):
    svc = service_factory(MESHFORGE_REDIS_URL="redis://127.0.0.1:1/0")
    svc.start_api(wait=False)
    svc.wait_until(lambda: svc._up("/health"), 30, "the API did not start")
    r = svc.http.get("/ready")
    assert r.status_code == 503 and r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "Redis" in r.json()["error"]["message"]


def test_openapi_schema_is_served(service):
    spec = service.http.get("/schema/openapi.json").json()
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/download", "/jobs/{job_id}/cancel", "/models", "/health",
            "/ready"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/jobs"]["post"]["requestBody"]["content"]


# ── cancellation ─────────────────────────────────────────────────────────────────────────

def confirm(svc, job_id, token=None):
    if token is None:
        challenge = svc.http.post(f"/jobs/{job_id}/cancel")
        assert challenge.status_code == 202, challenge.text
        token = challenge.json()["confirm_token"]
    return svc.http.post(f"/jobs/{job_id}/cancel", json={"confirm_token": token})


def test_cancel_before_start(service_factory, spot_small):
    svc = service_factory()
    svc.start_api()  # no worker: the job waits in the queue
    job = svc.submit(spot_small.capture)
    first = svc.http.post(f"/jobs/{job['job_id']}/cancel")
    assert first.status_code == 202 and svc.job(job["job_id"])["status"] == "queued"  # nothing changes yet
    r = confirm(svc, job["job_id"], first.json()["confirm_token"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    svc.start_workers()  # the worker sees the message and skips the cancelled job
    time.sleep(2)
    assert svc.job(job["job_id"])["status"] == "cancelled"
    r = svc.http.get(f"/jobs/{job['job_id']}/download")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert json.loads(zf.read(f"{job['job_id']}/report.json"))["status"] == "cancelled"


def test_cancel_during_run_stops_the_model_process(service, spot_small):
    job = service.submit(spot_small.capture, options='{"fusion": {"resolution": 400}}')
    service.wait_until(lambda: service.job(job["job_id"])["status"] == "running" and service.model_processes(),
                       60, "the model did not start")
    children = service.model_processes()
    t0 = time.monotonic()
    r = confirm(service, job["job_id"])
    assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled")
    done = service.wait_for(job["job_id"], "cancelled", timeout=30)
    assert time.monotonic() - t0 < 10  # cooperative cancel within the 5 s grace, or killed
    assert done["models"]["fusion"]["status"] == "cancelled"
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)
    assert service.http.get(f"/jobs/{job['job_id']}/download").status_code == 200


def test_cancel_tokens_expire_and_belong_to_one_job(service_factory, spot_small):
    svc = service_factory(MESHFORGE_CONFIRM_TTL_S="1")
    svc.start_api()
    a, b = svc.submit(spot_small.capture), svc.submit(spot_small.capture)
    token_a = svc.http.post(f"/jobs/{a['job_id']}/cancel").json()["confirm_token"]
    r = confirm(svc, b["job_id"], token_a)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_CONFIRM_TOKEN"
    assert "another job" in r.json()["error"]["message"]
    time.sleep(1.5)
    r = confirm(svc, a["job_id"], token_a)
    assert r.status_code == 400 and "expired" in r.json()["error"]["message"]
    r = svc.http.post(f"/jobs/{a['job_id']}/cancel", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_REQUEST"
    assert svc.job(a["job_id"])["status"] == "queued"


# ── faults ───────────────────────────────────────────────────────────────────────────────

def test_a_killed_model_process_is_worker_lost_and_the_worker_survives(service, spot_small):
    job = service.submit(spot_small.capture, options='{"fusion": {"resolution": 400}}')
    service.wait_until(lambda: service.model_processes(), 60, "the model did not start")
    workers = service.worker_pids()
    for p in service.model_processes():
        p.send_signal(signal.SIGKILL)
    done = service.wait_for(job["job_id"], "failed", timeout=60)
    assert done["models"]["fusion"]["error"]["code"] == "WORKER_LOST"
    assert "signal 9" in done["models"]["fusion"]["error"]["message"]
    assert service.worker_pids() == workers  # the worker itself is fine
    again = service.submit(spot_small.capture)
    service.wait_for(again["job_id"], "succeeded")


def test_a_model_over_its_time_limit_times_out(service_factory, spot_small):
    svc = service_factory(MESHFORGE_MODEL_TIME_LIMIT_S="2")
    svc.start_api()
    svc.start_workers()
    job = svc.submit(spot_small.capture, options='{"fusion": {"resolution": 600}}')
    done = svc.wait_for(job["job_id"], ("failed", "succeeded"), timeout=60)
    assert done["status"] == "failed" and done["models"]["fusion"]["error"]["code"] == "MODEL_TIMEOUT"
    assert not svc.model_processes()


def test_api_restart_mid_job(service, spot_small):
    job = service.submit(spot_small.capture, options='{"fusion": {"resolution": 256}}')
    service.wait_for(job["job_id"], "running")
    service.stop_api(signal.SIGKILL)
    service.start_api()
    done = service.wait_for(job["job_id"], "succeeded")
    assert done["models"]["fusion"]["status"] == "succeeded"


def test_worker_killed_mid_job_is_redelivered(service, spot_small):
    job = service.submit(spot_small.capture, options='{"fusion": {"resolution": 256}}')
    service.wait_until(lambda: service.model_processes(), 60, "the model did not start")
    victim = service.worker_pids()[0]
    psutil.Process(victim).send_signal(signal.SIGKILL)
    # the supervisor starts a new worker; the janitor hands the message to it; the job finishes
    done = service.wait_for(job["job_id"], ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", done
    raw = service.http.get(f"/jobs/{job['job_id']}").json()
    assert raw["models"]["fusion"]["status"] == "succeeded"
    assert victim not in service.worker_pids() and service.worker_pids()
    assert not [p for p in psutil.process_iter(["cmdline"]) if "spawn_main" in " ".join(p.info["cmdline"] or [])
                and p.ppid() == 1]  # no orphaned model process


def test_jobs_never_stay_running_after_repeated_worker_loss(service_factory, spot_small):
    svc = service_factory(MESHFORGE_MAX_ATTEMPTS="1")
    svc.start_api()
    svc.start_workers()
    job = svc.submit(spot_small.capture, options='{"fusion": {"resolution": 256}}')
    svc.wait_until(lambda: svc.model_processes(), 60, "the model did not start")
    psutil.Process(svc.worker_pids()[0]).send_signal(signal.SIGKILL)
    done = svc.wait_for(job["job_id"], ("failed", "succeeded"), timeout=120)
    assert done["status"] == "failed" and done["error"]["code"] == "WORKER_LOST"
    assert "started 1 times" in done["error"]["message"]


# ── access ───────────────────────────────────────────────────────────────────────────────

def test_api_keys_guard_everything_but_health_and_separate_owners(service_factory, spot_small):
    svc = service_factory(MESHFORGE_API_KEYS="alice=key-a,bob=key-b")
    svc.start_api()
    svc.start_workers(wait=False)
    alice, bob = {"X-API-Key": "key-a"}, {"Authorization": "Bearer key-b"}
    assert svc.http.get("/health").status_code == 200
    for method, path in (("GET", "/models"), ("GET", "/jobs"), ("GET", "/ready"), ("POST", "/jobs"),
                         ("GET", "/jobs/x"), ("GET", "/schema/openapi.json")):
        r = svc.http.request(method, path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED", (method, path)
        assert svc.http.request(method, path, headers={"X-API-Key": "wrong"}).status_code == 401
    job = svc.submit(spot_small.capture, headers=alice)
    assert svc.http.get(f"/jobs/{job['job_id']}", headers=alice).status_code == 200
    assert svc.http.get(f"/jobs/{job['job_id']}", headers=bob).status_code == 404
    assert svc.http.get(f"/jobs/{job['job_id']}/download", headers=bob).status_code == 404
    assert svc.http.post(f"/jobs/{job['job_id']}/cancel", headers=bob).status_code == 404
    assert svc.http.get("/jobs", headers=bob).json()["jobs"] == []
    assert [j["job_id"] for j in svc.http.get("/jobs", headers=alice).json()["jobs"]] == [job["job_id"]]


# ── one worker per GPU ───────────────────────────────────────────────────────────────────

def test_one_worker_per_gpu_each_pinned_to_its_device(service_factory, spot_small):
    svc = service_factory()
    svc.start_api()
    svc.start_workers("--gpus", "0,1")
    svc.wait_until(lambda: len(svc.worker_pids()) == 2, 60, "two workers")
    envs = [psutil.Process(pid).environ() for pid in svc.worker_pids()]
    assert sorted(e.get("CUDA_VISIBLE_DEVICES") for e in envs) == ["0", "1"]
    # the CPU stages of two jobs at once share the cores instead of oversubscribing them
    share = str(max(1, os.cpu_count() // 2))
    assert all(e.get("NUMBA_NUM_THREADS") == os.environ.get("NUMBA_NUM_THREADS", share) and
               e.get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS", share) for e in envs)
    svc.wait_until(lambda: fusion(svc.models())["workers"] == 2, 30, "both workers registered")
    jobs = [svc.submit(spot_small.capture) for _ in range(2)]
    for job in jobs:
        svc.wait_for(job["job_id"], "succeeded")


# ── one command ──────────────────────────────────────────────────────────────────────────

def test_meshforge_serve_runs_everything_and_stops_cleanly(tmp_path, spot_small):
    import subprocess
    import sys

    port = free_port()
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MESHFORGE_")}
    proc = subprocess.Popen([sys.executable, "-m", "meshforge.cli", "serve", "--port", str(port), "--data-dir",
                             str(tmp_path / "data")], env=env, stdout=open(tmp_path / "serve.log", "wb"),
                            stderr=subprocess.STDOUT)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.get("/ready").status_code == 200 and fusion(client.get("/models").json())["available"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        with open(spot_small.capture, "rb") as fh:
            job = client.post("/jobs", files={"file": ("c.zip", fh)}, data={"options": FAST}).json()
        deadline = time.monotonic() + 180
        while client.get(f"/jobs/{job['job_id']}").json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert client.get(f"/jobs/{job['job_id']}").json()["status"] == "succeeded"
        assert (tmp_path / "data" / "redis" / "appendonly.aof").exists() or \
            list((tmp_path / "data" / "redis").glob("appendonlydir/*"))
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    time.sleep(1)
    assert not [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
