"""Access (issue 7): API keys, owners, unguessable ids, downloads that never follow user paths.

The model (README "The service", architecture.md): with ``MESHFORGE_API_KEYS`` set, every
endpoint but ``/health`` needs a known key; a job belongs to the key that submitted it (its
owner is a hash of the key, never the key); every other key gets 404 for it, exactly as for a
job that does not exist, and never sees it listed.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile

import pytest

from meshforge_service.store import new_job_id

ALICE, BOB = {"X-API-Key": "key-a"}, {"Authorization": "Bearer key-b"}


def _concrete(path: str, job_id: str) -> str:
    return re.sub(r"\{[^}]+\}", job_id, path)


@pytest.fixture
def keyed(service_factory):
    svc = service_factory(MESHFORGE_API_KEYS="alice=key-a,bob=key-b")
    svc.start_api()
    return svc


def test_every_endpoint_but_health_refuses_missing_and_wrong_keys(keyed, spot_small):
    job = keyed.submit(spot_small.capture, headers=ALICE)["job_id"]
    spec = keyed.http.get("/schema/openapi.json", headers=ALICE).json()
    routes = [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops
              if method in ("get", "post", "put", "delete", "patch")]
    routes += [("GET", "/schema/openapi.json"), ("GET", "/schema")]  # paths that are no endpoint stay 404/405
    assert {("POST", "/jobs"), ("GET", "/jobs/{job_id}/download"), ("POST", "/jobs/{job_id}/cancel"),
            ("GET", "/jobs/{job_id}/events"), ("GET", "/models"), ("GET", "/ready")} <= set(routes)
    wrong = [{}, {"X-API-Key": ""}, {"X-API-Key": "key-c"}, {"X-API-Key": "key-a2"}, {"X-API-Key": "KEY-A"},
             {"Authorization": "Bearer"}, {"Authorization": "Basic a2V5LWE="}, {"Authorization": "key-a"},
             {"X-API-Key": "key-a" + "x" * 5000}]
    for method, path in routes:
        url = _concrete(path, job)
        for headers in wrong:
            r = keyed.http.request(method, url, headers=headers)
            if path == "/health":
                assert r.status_code == 200
                continue
            assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED", (method, path, headers)
    # the schema says so too: one security scheme, required everywhere but /health
    assert spec["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "name": "X-API-Key", "in": "header"}
    assert spec["paths"]["/health"]["get"]["security"] == [{}]
    # the refused requests changed nothing
    assert keyed.job(job, ALICE)["status"] == "queued"


def test_a_key_sees_only_its_own_jobs(keyed, spot_small):
    mine = keyed.submit(spot_small.capture, headers=ALICE)["job_id"]
    theirs = keyed.submit(spot_small.capture, headers=BOB)["job_id"]
    for job, owner, other in ((mine, ALICE, BOB), (theirs, BOB, ALICE)):
        assert keyed.http.get(f"/jobs/{job}", headers=owner).status_code == 200
        for method, path in (("GET", f"/jobs/{job}"), ("GET", f"/jobs/{job}/download"),
                             ("GET", f"/jobs/{job}/events"), ("POST", f"/jobs/{job}/cancel")):
            r = keyed.http.request(method, path, headers=other)
            # the same answer as for a job that does not exist: nothing tells that it does
            assert r.status_code == 404 and r.json()["error"]["code"] == "JOB_NOT_FOUND", (method, path)
        listed = keyed.http.get("/jobs", headers=other).json()["jobs"]
        assert job not in [j["job_id"] for j in listed]
        assert [j["job_id"] for j in keyed.http.get("/jobs", headers=owner).json()["jobs"]] == [job]
    # a token asked for by the owner cannot be confirmed by another key
    token = keyed.http.post(f"/jobs/{mine}/cancel", headers=ALICE).json()["confirm_token"]
    r = keyed.http.post(f"/jobs/{mine}/cancel", json={"confirm_token": token}, headers=BOB)
    assert r.status_code == 404 and keyed.job(mine, ALICE)["status"] == "queued"
    # an idempotency key is per owner: bob's reuse of alice's key makes his own job
    first = keyed.submit(spot_small.capture, headers={**ALICE, "Idempotency-Key": "k1"})["job_id"]
    second = keyed.submit(spot_small.capture, headers={**BOB, "Idempotency-Key": "k1"})["job_id"]
    assert first != second
    assert keyed.http.get(f"/jobs/{first}", headers=BOB).status_code == 404
    # the stored owner is a hash of the key, never the key itself
    raw = keyed.http.get(f"/jobs/{mine}", headers=ALICE).text
    assert "key-a" not in raw


def test_job_ids_are_128_random_bits(service, spot_small):
    ids = [new_job_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)  # 22 base64url characters = 128 bits
    # every character position varies (no counter, no timestamp prefix)
    assert all(len({i[k] for i in ids}) > 50 for k in range(21))
    served = [service.submit(spot_small.capture)["job_id"] for _ in range(3)]
    assert len(set(served)) == 3 and all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in served)


def test_downloads_never_follow_user_supplied_paths(service, spot_small, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for download")
    # an upload's file name is never used as a path
    with open(spot_small.capture, "rb") as fh:
        r = service.http.post("/jobs", files={"file": ("../../../../secret-upload.zip", fh, "application/zip")},
                              data={"options": '{"fusion": {"resolution": 96}}'})
    assert r.status_code == 202
    job = r.json()["job_id"]
    data = service.root / "data"
    assert not list(service.root.rglob("secret-upload.zip")) and not list(tmp_path.rglob("secret-upload.zip"))
    assert sorted(p.name for p in (data / "jobs" / job).iterdir()) == ["input.zip"]
    service.wait_for(job, "succeeded")
    # a link planted in a result folder (by anything) is not followed into the bundle
    result = data / "jobs" / job / "result"
    (result / "fusion" / "leak.txt").symlink_to(secret)
    (result / "leak-dir").symlink_to(tmp_path, target_is_directory=True)
    r = service.http.get(f"/jobs/{job}/download")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
        assert all(n.startswith(f"{job}/") and ".." not in n.split("/") for n in names)
        assert not [n for n in names if "leak" in n or "secret" in n]
        assert all(b"not for download" not in zf.read(n) for n in names)
        assert json.loads(zf.read(f"{job}/report.json"))["job_id"] == job
    # path-like ids never reach the file system
    for path in (f"/jobs/{job}%2F..%2F..%2F/download", "/jobs/..%252F..%252F/download", f"/jobs/{job}..%2F/download",
                 "/jobs/%2E%2E/download", "/jobs/.../download"):
        r = service.http.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] in ("JOB_NOT_FOUND", "NOT_FOUND"), (path, r.text)
