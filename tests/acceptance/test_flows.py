"""Example flows under tests/flows run through a real server, with their expected replies."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from lobflows.store import RunStore
from tests import support

pytestmark = pytest.mark.acceptance
QUOTE = support.REPO / "tests" / "flows" / "quote"
SIGNING_KEY = "quote-signing-key-for-tests"


@pytest.fixture
def quote_server(store_url: str, tmp_path: Path):
    env = support.base_env(store_url, LOBFLOWS_SECRET_QUOTE_SIGNING_KEY=SIGNING_KEY)
    server = support.ServerProcess(env, QUOTE, tmp_path / "server.log").start()
    yield server
    server.stop()


def post(server: support.ServerProcess, body: object) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Signature-256": support.sign(raw, SIGNING_KEY),
    }
    return httpx.post(
        server.url + "/hooks/quote", content=raw, headers=headers, timeout=30
    )


@pytest.mark.parametrize(
    "case",
    json.loads((QUOTE / "cases.json").read_text()),
    ids=["standard", "gold-bulk"],
)
async def test_sync_webhook_answers_with_the_respond_step(
    quote_server, store: RunStore, case: dict
):
    reply = post(quote_server, case["input"])

    assert reply.status_code == case["status"], reply.text
    assert reply.json() == case["body"]
    assert reply.headers["x-quote-tier"] == case["tier"]
    run = await support.wait_for_run(store, reply.headers["x-lobflows-run"])
    assert run.status == "succeeded"
    assert run.response["body"] == case["body"]


async def test_sync_webhook_answers_502_when_the_run_fails(
    quote_server, store: RunStore
):
    reply = post(quote_server, {"customer": "Initech"})  # no quantity

    assert reply.status_code == 502
    assert "'quantity'" in reply.json()["error"]
    [letter] = await store.dead_letters()
    assert letter.step == "request"


def test_run_command_executes_a_flow_by_hand(store_url: str, tmp_path: Path):
    env = support.base_env(store_url, LOBFLOWS_SECRET_QUOTE_SIGNING_KEY=SIGNING_KEY)
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"customer": "Hooli", "quantity": 2}))

    result = support.cli(
        env, "run", "quote", "--input", str(data), "--flows", str(QUOTE)
    )

    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout and "respond" in result.stdout
    listed = support.cli(env, "runs", "list")
    assert "quote" in listed.stdout and "manual" in listed.stdout


def test_run_command_names_an_unknown_flow_and_lists_the_known_ones(
    store_url: str, tmp_path: Path
):
    env = support.base_env(store_url, LOBFLOWS_SECRET_QUOTE_SIGNING_KEY=SIGNING_KEY)

    result = support.cli(env, "run", "no-such-flow", "--flows", str(QUOTE))

    assert result.returncode == 3
    assert "no flow named 'no-such-flow'; loaded flows: quote" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "tier", ["gold\r\nSet-Cookie: a=b", "ünï 🎉"], ids=["header-injection", "non-ascii"]
)
async def test_sync_webhook_refuses_a_reply_header_http_cannot_carry(
    quote_server, store: RunStore, tier: str
):
    reply = post(quote_server, {"customer": "Umbrella", "quantity": 1, "tier": tier})

    assert reply.status_code == 502
    assert (
        "header 'X-Quote-Tier' must be printable ASCII on one line"
        in reply.json()["error"]
    )
    assert "set-cookie" not in reply.headers
    [letter] = await store.dead_letters()
    assert letter.step == "respond"
