"""Webhooks without a server: the signed body, the id every try of a delivery carries, which secret signs,
and what a create's webhook is refused for."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from vibewave.api.auth import OPEN, Principal
from vibewave.api.gateway import to_public
from vibewave.api.settings import WebhookSettings
from vibewave.api.webhooks import (
    WebhookRefused,
    accept,
    choose_secret,
    payload,
    signed_headers,
    webhook_consumer,
    webhook_id,
)
from vibewave.contracts.events import WEBHOOKS_CONSUMER, RequestProgress, RequestRecord
from vibewave.contracts.models import RequestStatus, Scope, WebhookEvent, WebhookSpec, WorkflowResult
from vibewave.runtime.process import ConfigurationError
from vibewave.runtime.settings import Secret

pytestmark = pytest.mark.unit

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
KEYED = Principal(key_id="0123456789ab", tenant="acme", scopes=frozenset({Scope.GENERATE}))


def record(status: RequestStatus = RequestStatus.COMPLETED) -> RequestRecord:
    result = WorkflowResult(
        success=True, files=["a.png"], request_id="req-0123456789abcdef", pod_id="p", pod_ip="10.0.0.9"
    )
    return RequestRecord(
        id="req-0123456789abcdef", workflow_name="comfyui_image_qwen", inputs={"prompt": "a lighthouse"},
        status=status, created_at=AT, updated_at=AT, result=result, tenant="acme", key_id="0123456789ab",
        webhook=WebhookSpec(url="https://hooks.example.com/in"),
    )  # fmt: skip


def test_the_body_is_the_public_view_of_the_request() -> None:
    body = json.loads(payload(WebhookEvent.COMPLETED, AT, to_public(record(), reveal_pod=False)))
    assert body["type"] == "request.completed"
    assert body["timestamp"] == "2025-01-01T12:00:00Z"
    assert body["data"]["id"] == "req-0123456789abcdef" and body["data"]["status"] == "completed"
    assert body["data"]["result"]["files"] == ["a.png"]
    assert body["data"]["result"]["pod_ip"] is None  # a pod's address is for admins only
    assert "webhook" not in body["data"] and "key_id" not in body["data"]


def test_a_progress_body_carries_the_events_fields() -> None:
    progress = RequestProgress(request_id="req-0123456789abcdef", node="3", value=2, max=4, percent=50.0)
    view = to_public(record(RequestStatus.RUNNING), 50.0, reveal_pod=False)
    data = json.loads(payload(WebhookEvent.PROGRESS, AT, view, progress))["data"]
    assert (data["node"], data["value"], data["max"], data["percent"], data["status"]) == ("3", 2, 4, 50.0, "running")


def test_the_signature_verifies_with_standardwebhooks() -> None:
    body = payload(WebhookEvent.COMPLETED, AT, to_public(record(), reveal_pod=False))
    now = datetime.now(UTC)
    headers = signed_headers(SECRET, "msg_x", body, now)
    assert headers["webhook-id"] == "msg_x" and headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert Webhook(SECRET).verify(body, headers)["type"] == "request.completed"
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 32).verify(body, headers)


def test_every_try_of_a_delivery_has_the_same_id() -> None:
    end = webhook_id("req-0123456789abcdef", WebhookEvent.COMPLETED, 17)
    assert end == webhook_id("req-0123456789abcdef", WebhookEvent.COMPLETED, 99)  # a repeated end is the same
    assert end != webhook_id("req-0123456789abcdef", WebhookEvent.FAILED, 17)
    assert end != webhook_id("req-fedcba9876543210", WebhookEvent.COMPLETED, 17)
    first = webhook_id("req-0123456789abcdef", WebhookEvent.PROGRESS, 17)
    assert first == webhook_id("req-0123456789abcdef", WebhookEvent.PROGRESS, 17)
    assert first != webhook_id("req-0123456789abcdef", WebhookEvent.PROGRESS, 18)  # each progress its own


def test_the_keys_own_secret_signs_before_the_deployments() -> None:
    assert choose_secret(SECRET, Secret("whsec_other")) == SECRET
    assert choose_secret(None, Secret("whsec_other")) == "whsec_other"
    assert choose_secret(None, Secret("")) is None


async def test_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIBEWAVE_ALLOW_PRIVATE_URLS", raising=False)
    settings = WebhookSettings(secret=Secret(SECRET))
    for url in ("https://127.0.0.1/in", "https://10.1.2.3/in", "https://169.254.169.254/latest", "http://8.8.8.8/in"):
        with pytest.raises(WebhookRefused, match=r"webhook\.url"):
            await accept(WebhookSpec(url=url), OPEN, settings)
    await accept(WebhookSpec(url="https://8.8.8.8/in"), OPEN, settings)
    monkeypatch.setenv("VIBEWAVE_ALLOW_PRIVATE_URLS", "true")
    await accept(WebhookSpec(url="http://127.0.0.1:9/in"), OPEN, settings)


async def test_a_webhook_needs_a_secret_to_sign_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBEWAVE_ALLOW_PRIVATE_URLS", "true")
    hook = WebhookSpec(url="http://127.0.0.1:9/in")
    with pytest.raises(WebhookRefused, match="no secret"):
        await accept(hook, KEYED, WebhookSettings())
    await accept(
        hook, Principal(key_id="k", tenant="acme", scopes=frozenset(), own_webhook_secret=True), WebhookSettings()
    )
    await accept(hook, KEYED, WebhookSettings(secret=Secret(SECRET)))


def test_settings_tune_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("WEBHOOK_RETRY_DELAYS", "0.2,0.4,0.8")
    monkeypatch.setenv("WEBHOOK_MAX_TRIES", "4")
    settings = WebhookSettings.from_env()
    assert SECRET not in repr(settings)
    spec = webhook_consumer(settings)
    assert (spec.retry_delays_s, spec.max_deliver, spec.durable) == ((0.2, 0.4, 0.8), 4, WEBHOOKS_CONSUMER.durable)
    assert webhook_consumer(WebhookSettings()) == WEBHOOKS_CONSUMER
    monkeypatch.setenv("WEBHOOK_SECRET", "not-a-secret")
    with pytest.raises(ConfigurationError, match="WEBHOOK_SECRET"):
        WebhookSettings.from_env()
