"""Jobs and credits together: a job holds its price before it runs, success charges it once,
failure and cancel give it back, and no path (concurrency, duplicate events, a killed worker)
charges twice or lets a balance go below zero.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import nats
import pytest
from octavia.billing.v1 import billing_pb2, billing_pb2_grpc

from octavia_runtime.auth import SERVICE_TOKEN_HEADER, ServiceCredentials
from scripts import sample_media
from scripts import stack as local_stack

from .jobs_flow import create_job, uploaded_asset, wait_for, watch
from .ledger import assert_ledger_balanced, holds_of
from .test_jobs import TERMINAL, rest_user, subtitles_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("credits")
    return {
        "video": sample_media.sample_video(folder / "talk.mp4"),
        "long": sample_media.long_speech(folder / "long.wav", 45),
        "silent": sample_media.silent_audio(folder / "silence.wav", 4),
    }


@pytest.fixture(scope="module")
def billing(stack):
    """BillingService as an Octavia service (or an operator holding the service key) calls it."""
    channel = grpc.insecure_channel(stack.endpoint("billing").target)
    yield billing_pb2_grpc.BillingServiceStub(channel)
    channel.close()


def service_metadata(stack) -> tuple[tuple[str, str], ...]:
    return ((SERVICE_TOKEN_HEADER, ServiceCredentials("operator", stack.service_secret).token()),)


class Account:
    """A new user, seen through Envoy, with an operator's hand on their balance."""

    def __init__(self, rest: httpx.Client, billing, stack):
        self.rest, self.billing, self.stack = rest, billing, stack
        self.headers = rest_user(rest)
        self.user = rest.get("/v1/auth/me", headers=self.headers).json()["user"]["name"]

    def balance(self) -> tuple[int, int]:
        balance = self.rest.get("/v1/balance", headers=self.headers).json()["balance"]
        return int(balance.get("availableCredits", 0)), int(balance.get("heldCredits", 0))

    def set_available(self, credits: int) -> None:
        """Grant or take back credits so that exactly `credits` are available."""
        change = credits - self.balance()[0]
        if change:
            self.billing.GrantCredits(
                billing_pb2.GrantCreditsRequest(
                    user=self.user, credits=change, description="test setup", request_id=uuid.uuid4().hex
                ),
                metadata=service_metadata(self.stack),
            )

    def quote(self, kind: str, seconds: float, languages: int = 0) -> int:
        usage = {"kind": kind, "duration": f"{seconds}s", "targetLanguageCount": languages}
        reply = self.rest.post("/v1/quotes:compute", headers=self.headers, json={"usage": usage})
        assert reply.status_code == 200, reply.text
        return int(reply.json()["quote"]["credits"])

    def transactions(self) -> list[dict]:
        return self.rest.get("/v1/transactions?pageSize=100", headers=self.headers).json().get("transactions", [])

    def settled(self, timeout: float = 30) -> tuple[int, int]:
        """The balance once no credits are held any more (settlements are delivered just after a job ends)."""
        end = time.monotonic() + timeout
        while True:
            available, held = self.balance()
            if held == 0 or time.monotonic() > end:
                return available, held
            time.sleep(0.2)


@pytest.fixture
def account(rest, billing, stack) -> Account:
    return Account(rest, billing, stack)


def transcription(asset: str) -> dict:
    return {"kind": "JOB_KIND_TRANSCRIPTION", "inputAsset": asset, "transcriptionOptions": {"model": "tiny.en"}}


def duration_s(rest: httpx.Client, headers: dict, asset: str) -> float:
    info = rest.get(f"/v1/{asset}", headers=headers).json()["asset"]["mediaInfo"]
    return float(info["duration"].rstrip("s"))


def test_a_job_holds_its_price_and_success_charges_it_once(rest, account, clips):
    asset = uploaded_asset(rest, account.headers, clips["video"])
    price = account.quote("JOB_KIND_SUBTITLES", duration_s(rest, account.headers, asset), 1)
    available = account.balance()[0]

    job = create_job(rest, account.headers, subtitles_job(asset)).json()["job"]
    assert int(job["creditsHeld"]) == price
    assert account.balance() == (available - price, price)

    final = watch(str(rest.base_url), account.headers, job["name"])[-1]
    assert final["state"] == "STATE_SUCCEEDED", final
    assert account.settled() == (available - price, 0)
    done = rest.get(f"/v1/{job['name']}", headers=account.headers).json()["job"]
    assert int(done["creditsCharged"]) == price and int(done.get("creditsHeld", 0)) == 0
    charges = [t for t in account.transactions() if t["reason"] == "TRANSACTION_REASON_CAPTURE"]
    assert [(t["reference"], int(t["heldChange"])) for t in charges] == [(job["name"], -price)]


def test_a_failed_job_and_a_cancelled_job_give_their_credits_back(rest, account, clips):
    available = account.balance()[0]
    silent = uploaded_asset(rest, account.headers, clips["silent"])
    failed = create_job(rest, account.headers, transcription(silent)).json()["job"]
    long = uploaded_asset(rest, account.headers, clips["long"])
    cancelled = create_job(rest, account.headers, {**subtitles_job(long), "transcriptionOptions": {"model": "base"}}).json()[
        "job"
    ]
    assert rest.post(f"/v1/{cancelled['name']}:cancel", headers=account.headers, json={}).status_code == 200

    assert watch(str(rest.base_url), account.headers, failed["name"])[-1]["state"] == "STATE_FAILED"
    assert watch(str(rest.base_url), account.headers, cancelled["name"])[-1]["state"] == "STATE_CANCELLED"
    assert account.settled() == (available, 0)
    released = {t["reference"] for t in account.transactions() if t["reason"] == "TRANSACTION_REASON_RELEASE"}
    assert released == {failed["name"], cancelled["name"]}
    assert not [t for t in account.transactions() if t["reason"] == "TRANSACTION_REASON_CAPTURE"]


def test_too_few_credits_is_refused_and_leaves_no_job_and_no_hold(rest, account, clips):
    asset = uploaded_asset(rest, account.headers, clips["video"])
    price = account.quote("JOB_KIND_TRANSCRIPTION", duration_s(rest, account.headers, asset))
    account.set_available(price - 1)

    refused = create_job(rest, account.headers, transcription(asset))
    assert refused.status_code == 400, refused.text
    assert refused.json()["details"][0]["reason"] == "INSUFFICIENT_CREDITS"
    assert "credits" in refused.json()["message"]
    assert rest.get("/v1/jobs", headers=account.headers).json().get("jobs", []) == []
    assert account.balance() == (price - 1, 0)
    assert not [t for t in account.transactions() if t["reason"] == "TRANSACTION_REASON_HOLD"]


def test_fifty_concurrent_jobs_on_credits_for_ten_make_exactly_ten(rest, account, clips, stack):
    asset = uploaded_asset(rest, account.headers, clips["video"])
    price = account.quote("JOB_KIND_TRANSCRIPTION", duration_s(rest, account.headers, asset))
    account.set_available(10 * price)
    lowest = [10 * price]
    watching = threading.Event()

    def watch_balance() -> None:
        while not watching.is_set():
            lowest[0] = min(lowest[0], account.balance()[0])

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=str(rest.base_url), timeout=30) as client:
            return create_job(client, account.headers, transcription(asset))

    watcher = threading.Thread(target=watch_balance)
    watcher.start()
    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(create, range(50)))
    watching.set()
    watcher.join()

    created = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert len(created) == 10
    assert {r.json()["details"][0]["reason"] for r in refused} == {"INSUFFICIENT_CREDITS"}
    assert lowest[0] >= 0 and account.balance()[0] == 0
    listed = rest.get("/v1/jobs?pageSize=100", headers=account.headers).json()["jobs"]
    assert len(listed) == 10
    # Held, or already charged by the jobs that finished meanwhile: all ten prices, no more.
    assert sum(int(j.get("creditsHeld", 0)) + int(j.get("creditsCharged", 0)) for j in listed) == 10 * price
    for job in listed:
        rest.post(f"/v1/{job['name']}:cancel", headers=account.headers, json={})


def test_the_ledger_stays_balanced_through_random_outcomes_duplicate_events_and_a_killed_worker(rest, billing, stack, clips):
    """A randomized mix of jobs that succeed, fail and are cancelled; every stage event delivered
    twice more after the fact; a transcribe worker killed mid-job. Then every movement balances,
    every hold is settled exactly once, the way its job ended, and balances equal their entries."""
    rng = random.Random(int(os.environ.get("OCTAVIA_TEST_SEED", "4")))
    accounts = [Account(rest, billing, stack) for _ in range(3)]
    events: list[tuple[str, bytes]] = []
    loop = asyncio.new_event_loop()
    nc = loop.run_until_complete(nats.connect(stack.nats_url))

    async def keep(msg) -> None:
        events.append((msg.subject, msg.data))

    loop.run_until_complete(nc.subscribe("octavia.events.>", cb=keep))
    pump = threading.Thread(target=loop.run_forever, daemon=True)
    pump.start()
    try:
        assets = {
            (id(a), kind): uploaded_asset(rest, a.headers, clips[kind]) for a in accounts for kind in ("video", "long", "silent")
        }
        plan = []
        for n in range(9):
            account = accounts[n % len(accounts)]
            outcome = rng.choice(["succeed", "fail", "cancel"])
            if outcome == "succeed":
                spec = transcription(assets[(id(account), "video")])
            elif outcome == "fail":
                spec = transcription(assets[(id(account), "silent")])
            else:
                spec = {**subtitles_job(assets[(id(account), "long")]), "transcriptionOptions": {"model": "base"}}
            job = create_job(rest, account.headers, spec).json()["job"]
            plan.append((account, job, outcome))
            if outcome == "cancel" and rng.random() < 0.5:
                rest.post(f"/v1/{job['name']}:cancel", headers=account.headers, json={})

        # One more long job loses its transcribe worker mid-stage; JetStream gives the task to the next one.
        owner = accounts[0]
        spec = {**subtitles_job(assets[(id(owner), "long")]), "transcriptionOptions": {"model": "base"}}
        killed = create_job(rest, owner.headers, spec).json()["job"]
        plan.append((owner, killed, "succeed"))
        wait_for(
            rest,
            owner.headers,
            killed["name"],
            lambda j: any(s["stage"] == "STAGE_TRANSCRIBE" and s["state"] == "STAGE_STATE_RUNNING" for s in j["stages"]),
            timeout=180,
        )
        local_stack.crash("transcribe", stack)
        local_stack.up(stack)
        for account, job, outcome in plan:
            if outcome == "cancel":  # the rest of the cancels, now, whatever stage they reached
                rest.post(f"/v1/{job['name']}:cancel", headers=account.headers, json={})

        finals = {
            job["name"]: watch(str(rest.base_url), account.headers, job["name"], timeout=300)[-1] for account, job, _ in plan
        }
        assert all(final["state"] in TERMINAL for final in finals.values())

        # Every stage event again, twice: the orchestrator must ignore them all.
        async def replay() -> None:
            for subject, data in list(events) * 2:
                await nc.publish(subject, data)
            await nc.flush()

        asyncio.run_coroutine_threadsafe(replay(), loop).result(30)
        for account in accounts:
            assert account.settled(timeout=60)[1] == 0
        asyncio.run_coroutine_threadsafe(asyncio.sleep(3), loop).result(10)  # let the duplicates be consumed

        states = {
            job["name"]: rest.get(f"/v1/{job['name']}", headers=account.headers).json()["job"]["state"]
            for account, job, _ in plan
        }
        assert states == {name: final["state"] for name, final in finals.items()}, "duplicates changed a finished job"
        holds = holds_of(stack.database_url, [job["name"] for _, job, _ in plan])
        for name, state in states.items():
            expected = "CAPTURE" if state == "STATE_SUCCEEDED" else "RELEASE"
            assert holds[name] == [expected], f"{name} ({state}) settled as {holds[name]}"
        assert_ledger_balanced(stack.database_url)
    finally:
        asyncio.run_coroutine_threadsafe(nc.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
