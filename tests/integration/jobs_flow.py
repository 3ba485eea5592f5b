"""A browser's steps through Envoy's REST API: upload, create a job, watch it, download results."""

from __future__ import annotations

import json
import mimetypes
import time
import uuid
from pathlib import Path

import httpx


def upload(rest: httpx.Client, headers: dict, path: Path, content_type: str | None = None) -> dict:
    """CreateUpload, PUT the bytes to the presigned URL, CompleteUpload: the new asset."""
    content_type = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    created = rest.post(
        "/v1/uploads",
        headers=headers,
        json={"filename": path.name, "contentType": content_type, "sizeBytes": str(path.stat().st_size)},
    )
    assert created.status_code == 200, created.text
    upload_ = created.json()["upload"]
    put = httpx.put(upload_["uploadUrl"], content=path.read_bytes(), headers=upload_["uploadHeaders"], timeout=60)
    assert put.status_code in (200, 201, 204), put.text
    completed = rest.post(f"/v1/{upload_['name']}:complete", headers=headers, json={})
    return {"upload": upload_, "response": completed}


def uploaded_asset(rest: httpx.Client, headers: dict, path: Path) -> str:
    done = upload(rest, headers, path)["response"]
    assert done.status_code == 200, done.text
    return done.json()["asset"]["name"]


def create_job(rest: httpx.Client, headers: dict, job: dict, request_id: str | None = None) -> httpx.Response:
    return rest.post("/v1/jobs", headers=headers, json={"job": job, "requestId": request_id or uuid.uuid4().hex})


def watch(base_url: str, headers: dict, name: str, timeout: float = 240) -> list[dict]:
    """Every event WatchJob streams (as Server-Sent Events through Envoy), up to the final one."""
    events = []
    with httpx.stream("GET", f"{base_url}/v1/{name}:watch", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[len("data:") :])["event"]
            events.append(event)
            if event.get("final"):
                break
    return events


def wait_for(rest: httpx.Client, headers: dict, name: str, predicate, timeout: float = 120) -> dict:
    """Poll GetJob until `predicate(job)`; the job."""
    deadline = time.monotonic() + timeout
    while True:
        job = rest.get(f"/v1/{name}", headers=headers).json()["job"]
        if predicate(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def download(rest: httpx.Client, headers: dict, asset: str) -> httpx.Response:
    signed = rest.post(f"/v1/{asset}:createDownloadUrl", headers=headers, json={})
    assert signed.status_code == 200, signed.text
    return httpx.get(signed.json()["url"], timeout=30)
