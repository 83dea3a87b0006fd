"""Signed webhooks end to end: the four services as processes, receivers on 127.0.0.1 started here.

A `completed` webhook verifies with `standardwebhooks`; a receiver answering 500 three times gets the
event on the fourth try, every try with the same `webhook-id`; a receiver down for longer than the
retry budget leaves the delivery dead (listed, and in the dead letters); a key's own secret signs its
webhooks; a restarted api's redelivery carries the same `webhook-id`; a webhook to a private address
(or with no secret to sign it) is a 400 at submit.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import msgspec
import nats
import pytest
from standardwebhooks import Webhook

from tests.e2e.conftest import StackFactory
from tests.support.stack import Stack, free_port, wait_for
from vibewave.contracts.events import DEAD_LETTER_STREAM, DeadLetter, dead_letter_subject
from vibewave.devstack.nats_server import EmbeddedNats

pytestmark = pytest.mark.e2e

ADMIN_KEY = "adm-" + secrets.token_urlsafe(24)
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
MAX_TRIES = 5
SETTINGS = {
    "VIBEWAVE_ADMIN_KEY": ADMIN_KEY,
    "VIBEWAVE_ALLOW_PRIVATE_URLS": "true",
    "WEBHOOK_SECRET": SECRET,
    "WEBHOOK_RETRY_DELAYS": "0.2,0.4,0.8",
    "WEBHOOK_MAX_TRIES": str(MAX_TRIES),
    "WEBHOOK_TIMEOUT": "2",
}
BODY = {"prompt": "a lighthouse in a storm", "width": 512, "height": 512, "steps": 4}


@dataclass(frozen=True)
class Hit:
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """A webhook receiver on a free 127.0.0.1 port: `answer(n)` is the status of its n-th call (from 1)."""

    def __init__(self, answer: Callable[[int], int] = lambda _: 200) -> None:
        self.answer = answer
        self.hits: list[Hit] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.changed:
                    status = receiver.answer(len(receiver.hits) + 1)
                    receiver.hits.append(Hit({k.lower(): v for k, v in self.headers.items()}, body, status))
                    receiver.changed.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/in?token=t0k3n"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, count: int, timeout: float = 60) -> list[Hit]:
        """The first `count` calls, once they have come (bounded)."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.hits) >= count, timeout):
                raise AssertionError(f"{len(self.hits)} of {count} webhook calls within {timeout}s")
            return list(self.hits)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(answer: Callable[[int], int] = lambda _: 200) -> Receiver:
        started.append(Receiver(answer))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture(scope="module")
def hooked(start_stack: StackFactory) -> Stack:
    stack = start_stack(**SETTINGS)
    stack.client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
    return stack


def submit(stack: Stack, url: str, client: httpx.Client | None = None, **webhook: Any) -> str:
    response = (client or stack.client).post(
        "/api/qwen/generate-async", json={**BODY, "webhook": {"url": url, **webhook}}
    )
    assert response.status_code == 202, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def deliveries(client: httpx.Client, **query: Any) -> list[dict[str, Any]]:
    response = client.get("/api/webhooks/deliveries", params=query)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def verified(hit: Hit, secret: str = SECRET) -> dict[str, Any]:
    body: dict[str, Any] = Webhook(secret).verify(hit.body, hit.headers)
    return body


def test_completed_is_signed_and_verifies(hooked: Stack, receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    request_id = submit(hooked, receiver.url)
    (hit,) = receiver.wait(1)
    body = verified(hit)
    assert body["type"] == "request.completed"
    assert body["data"]["id"] == request_id and body["data"]["status"] == "completed"
    assert body["data"]["result"]["files"] and body["data"]["result"]["pod_ip"] is None
    assert hit.headers["webhook-id"] == f"msg_{request_id}_completed"
    (delivery,) = wait_for(lambda: deliveries(hooked.client, request_id=request_id, status="delivered"), 10, "listed")
    assert (delivery["attempts"], delivery["response_status"], delivery["id"]) == (1, 200, hit.headers["webhook-id"])
    time.sleep(0.5)  # nothing else follows: only the end was asked for (no progress)
    assert len(receiver.hits) == 1
    assert SECRET not in hooked.logs()


def test_a_receiver_failing_three_times_gets_it_on_the_fourth_try(
    hooked: Stack, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(lambda n: 500 if n <= 3 else 200)
    request_id = submit(hooked, receiver.url)
    hits = receiver.wait(4)
    assert [h.answered for h in hits] == [500, 500, 500, 200]
    assert {h.headers["webhook-id"] for h in hits} == {f"msg_{request_id}_completed"}
    assert verified(hits[3])["data"]["id"] == request_id
    (delivery,) = wait_for(lambda: deliveries(hooked.client, request_id=request_id, status="delivered"), 10, "listed")
    assert delivery["attempts"] == 4 and delivery["first_try_at"] < delivery["last_try_at"]
    time.sleep(0.5)
    assert len(receiver.hits) == 4  # taken: not sent again


def test_a_receiver_down_past_the_retry_budget_is_dead_lettered(hooked: Stack) -> None:
    down = f"http://127.0.0.1:{free_port()}/hooks/in"  # nothing listens there
    request_id = submit(hooked, down)
    (dead,) = wait_for(lambda: deliveries(hooked.client, request_id=request_id, status="dead"), 60, "a dead delivery")
    assert dead["attempts"] == MAX_TRIES and dead["response_status"] is None
    assert dead["id"] == f"msg_{request_id}_completed" and dead["event"] == "completed" and dead["error"]
    assert dead in deliveries(hooked.client, status="dead")
    letter = asyncio.run(last_dead_letter(hooked.env["NATS_URL"]))
    assert letter.subject == f"vw.req.{request_id}.completed" and letter.deliveries == MAX_TRIES


async def last_dead_letter(nats_url: str) -> DeadLetter:
    nc = await nats.connect(nats_url)
    try:
        raw = await nc.jetstream().get_last_msg(DEAD_LETTER_STREAM.name, dead_letter_subject("webhooks"))
        return msgspec.json.decode(raw.data or b"", type=DeadLetter)
    finally:
        await nc.close()


def test_a_keys_own_secret_signs_its_webhooks(hooked: Stack, receivers: Callable[..., Receiver]) -> None:
    own = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    made = hooked.client.post("/api/keys", json={"name": "hooks-tenant", "webhook_secret": own})
    assert made.status_code == 201, made.text
    assert made.json()["webhook_secret_set"] is True and own not in made.text
    listed = hooked.client.get("/api/keys").text
    assert own not in listed and '"webhook_secret_set":true' in listed.replace(" ", "")
    receiver = receivers()
    with httpx.Client(base_url=hooked.base_url, headers={"Authorization": f"Bearer {made.json()['key']}"}) as tenant:
        request_id = submit(hooked, receiver.url, tenant, events=["progress", "completed"])
        hits = receiver.wait(1)
        for hit in hits:
            with pytest.raises(Exception, match="signature"):
                verified(hit)  # not the deployment's secret
        ends = wait_for(
            lambda: [h for h in receiver.hits if verified(h, own)["type"] == "request.completed"], 60, "end"
        )
        assert verified(ends[0], own)["data"]["id"] == request_id
        progress = [verified(h, own) for h in receiver.hits if verified(h, own)["type"] == "request.progress"]
        assert progress and all(0 <= p["data"]["percent"] <= 100 for p in progress)
        listing = wait_for(lambda: deliveries(tenant, status="delivered"), 10, "the tenant's deliveries")
        assert {d["tenant"] for d in listing} == {"hooks-tenant"}  # only its own
        assert any(d["request_id"] == request_id and d["event"] == "completed" for d in listing)


def test_a_redelivery_after_a_restart_carries_the_same_webhook_id(
    hooked: Stack, receivers: Callable[..., Receiver]
) -> None:
    accepting = threading.Event()
    receiver = receivers(lambda _: 200 if accepting.is_set() else 503)
    request_id = submit(hooked, receiver.url)
    receiver.wait(1)
    hooked.kill("api")  # mid-retry: its next try is the restarted api's
    tried_before = len(receiver.hits)
    assert tried_before < MAX_TRIES
    accepting.set()
    hooked.start("api")
    hooked.wait_healthy(timeout=60)
    hits = receiver.wait(tried_before + 1, timeout=60)
    assert {h.headers["webhook-id"] for h in hits} == {f"msg_{request_id}_completed"}
    assert hits[-1].answered == 200 and verified(hits[-1])["data"]["id"] == request_id


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An api alone (a submit is checked before anything is queued), without private URLs or a secret."""
    server = EmbeddedNats(tmp_path_factory.mktemp("strict-nats"))
    server.start()
    stack = Stack(server.url, tmp_path_factory.mktemp("strict-home"), VIBEWAVE_ALLOW_PRIVATE_URLS="false",
                  WEBHOOK_SECRET="")  # fmt: skip
    try:
        stack.start("api")
        wait_for(stack.health, 60, "the api to answer")
        yield stack
    finally:
        stack.close()
        server.stop()


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/in", "https://127.0.0.1/in", "https://10.0.0.7/in", "https://169.254.169.254/latest",
     "https://[::1]/in", "https://localhost/in"],
)  # fmt: skip
def test_a_webhook_to_a_private_address_is_refused_at_submit(strict: Stack, url: str) -> None:
    for path, body in (("/api/qwen/generate-async", BODY), ("/api/runpod/generate-multiple-images", {"prompt": "x"})):
        response = strict.client.post(path, json={**body, "webhook": {"url": url}})
        assert response.status_code == 400, response.text
        assert "webhook.url" in response.json()["detail"]


def test_a_webhook_with_no_secret_to_sign_it_is_refused(strict: Stack) -> None:
    response = strict.client.post("/api/qwen/generate-async", json={**BODY, "webhook": {"url": "https://8.8.8.8/in"}})
    assert response.status_code == 400 and "WEBHOOK_SECRET" in response.json()["detail"], response.text
