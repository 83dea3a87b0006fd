"""Signed webhooks: each event a request's webhook asked for, POSTed by the Standard Webhooks scheme.

The sender runs in the api process, never in a request's path: a durable consumer (`webhooks`) on
REQUESTS that every api replica shares, so each event is sent once whichever replica takes it. A failed
try raises, and the runtime's delivery rules retry it after a doubling delay and dead-letter it when the
tries are spent (`WEBHOOKS_CONSUMER`, tuned by WEBHOOK_RETRY_DELAYS and WEBHOOK_MAX_TRIES). Every try of
one delivery — a retry, or a redelivery to a restarted or other replica — carries the same `webhook-id`,
derived from the event itself (`webhook_id`), so a receiver can drop a repeat. KV `webhook_deliveries`
keeps each delivery's state for `GET /api/webhooks/deliveries`.

Secrets: the creating key's own (`ApiKeyRecord.webhook_secret`, looked up by the record's `key_id` when
signing, so no event or record carries it), else the deployment's WEBHOOK_SECRET. The URL is checked at
submit (`accept`: a 400), again before each try, and at each connection (`guarded_session`), with
redirects not followed: a receiver cannot bounce a try to an address inside.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import nats.errors
import nats.js.errors
from faststream import AckPolicy
from faststream.nats import NatsBroker, PullSub
from nats.aio.msg import Msg
from standardwebhooks import Webhook

from vibewave.api.auth import KeyStore, Principal
from vibewave.api.index import RequestIndex
from vibewave.api.settings import WebhookSettings
from vibewave.contracts.events import (
    REQ_PREFIX,
    REQUESTS_BUCKET,
    REQUESTS_STREAM,
    WEBHOOK_DELIVERIES_BUCKET,
    WEBHOOKS_CONSUMER,
    ConsumerSpec,
    RequestProgress,
    RequestRecord,
    split_request_subject,
    utcnow,
)
from vibewave.contracts.models import (
    ComfyUIRequest,
    DeliveryStatus,
    RequestStatus,
    WebhookDelivery,
    WebhookEvent,
    WebhookSpec,
)
from vibewave.runtime import broker as runtime
from vibewave.runtime.broker import decode
from vibewave.runtime.metrics import instruments
from vibewave.runtime.settings import Secret
from vibewave.runtime.urls import UrlRefused, allow_private_urls, check_url, guarded_session

log = logging.getLogger("vibewave.api.webhooks")

# A progress event is tried twice at most, then dropped (marked dead, with no dead letter): the next
# progress, or the request's end, says more than a late one would, and a receiver that is down would
# otherwise keep a backlog of stale percentages in retry for the whole retry budget.
PROGRESS_TRIES = 2
CONCURRENT_SENDS = 16  # one slow receiver holds one of these, not the others' deliveries
STATUS_OF = {
    WebhookEvent.COMPLETED: RequestStatus.COMPLETED,
    WebhookEvent.FAILED: RequestStatus.FAILED,
    WebhookEvent.CANCELLED: RequestStatus.CANCELLED,
}
USER_AGENT = "vibewave-webhooks/1"


class WebhookRefused(ValueError):
    """A create's webhook cannot be accepted; the message says why (a 400's `detail`)."""


class DeliveryFailed(runtime.ExpectedFailure):
    """The receiver did not take this try (a status other than 2xx, no answer, a refused URL)."""


async def accept(webhook: WebhookSpec, principal: Principal, settings: WebhookSettings) -> None:
    """Raise WebhookRefused unless the URL may be called and there is a secret to sign with."""
    try:
        await check_url(webhook.url, allow_private=allow_private_urls(), what="webhook.url")
    except UrlRefused as exc:
        raise WebhookRefused(str(exc)) from exc
    if not principal.own_webhook_secret and not settings.secret:
        raise WebhookRefused(
            "webhook: there is no secret to sign it with; an admin sets one on the API key (`webhook_secret`) "
            "or for the deployment (WEBHOOK_SECRET)"
        )


def webhook_consumer(settings: WebhookSettings) -> ConsumerSpec:
    """The contract's consumer with the operator's delays and tries, registered for the delivery rules."""
    spec = WEBHOOKS_CONSUMER
    if settings.retry_delays_s is not None:
        spec = dataclasses.replace(spec, retry_delays_s=settings.retry_delays_s)
    if settings.max_tries is not None:
        spec = dataclasses.replace(spec, max_deliver=settings.max_tries)
    runtime.register_consumer(spec)
    return spec


def webhook_id(request_id: str, event: WebhookEvent, stream_sequence: int) -> str:
    """The `webhook-id` of every try of one delivery. A request ends once, so its end is named by the
    request alone (a repeated terminal event is the same delivery); progress by the event's place in the
    stream, which a redelivery keeps."""
    if event == WebhookEvent.PROGRESS:
        return f"msg_{request_id}_progress_{stream_sequence}"
    return f"msg_{request_id}_{event}"


def choose_secret(own: str | None, deployment: Secret) -> str | None:
    """The key's own secret, else the deployment's; None when neither is set."""
    return own or deployment.reveal() or None


def payload(event: WebhookEvent, at: datetime, view: ComfyUIRequest, progress: RequestProgress | None = None) -> bytes:
    """The body: `type`, `timestamp` (when the event happened) and `data`, the request as its owner reads
    it, with a progress event's own fields (`node`, `value`, `max`, `percent`) beside it."""
    data: dict[str, Any] = msgspec.to_builtins(view)
    if progress is not None:
        data.update({"node": progress.node, "value": progress.value, "max": progress.max, "percent": progress.percent})
    return msgspec.json.encode({"type": f"request.{event}", "timestamp": at.astimezone(UTC), "data": data})


def signed_headers(secret: str, msg_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one try (its timestamp is the try's: receivers refuse old ones)."""
    signature = Webhook(secret).sign(msg_id, now, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def _count(event: WebhookEvent, outcome: str) -> None:
    """One try in `vibewave.webhook.deliveries`: `delivered`, `failed` (to be retried) or `dead` (given up)."""
    instruments().webhook_deliveries.add(1, {"event": event.value, "outcome": outcome})


def _host(url: str) -> str:
    """What a log line names of a URL: its host, not a path or query that may carry a token."""
    return urlsplit(url).hostname or "?"


class WebhookSender:
    """The `webhooks` consumer of one api process, and the deliveries' records."""

    def __init__(
        self,
        broker: NatsBroker,
        settings: WebhookSettings,
        *,
        index: RequestIndex,
        keys: KeyStore,
        view: Callable[[RequestRecord], ComfyUIRequest],
        replicas: int = 1,
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.index = index
        self.keys = keys
        self.view = view
        self.replicas = replicas
        self.consumer = webhook_consumer(settings)
        self._session: aiohttp.ClientSession | None = None
        subscriber = broker.subscriber(
            f"{REQ_PREFIX}.*.*",
            stream=runtime.stream(REQUESTS_STREAM),
            durable=self.consumer.durable,
            config=runtime.consumer_config(self.consumer, replicas),
            pull_sub=PullSub(batch_size=1, timeout=1),
            max_workers=CONCURRENT_SENDS,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            title="api: webhooks",
            description="Sends each event a request's webhook asked for (progress, completed, failed, cancelled).",
        )
        subscriber(self.handle)
        runtime.steady_pulls(subscriber)

    async def prepare(self) -> None:
        """Before the broker serves: the durable as this process's settings say, and the HTTP session."""
        await runtime.ensure_consumer(runtime.jetstream(self.broker), self.consumer, self.replicas)
        self._session = guarded_session(
            allow_private=allow_private_urls(),
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            headers={"user-agent": USER_AGENT},
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def handle(self) -> None:
        """One event: skipped unless its request's webhook wants it; else one try (raising to be retried)."""
        raw = runtime.current_message().raw_message
        request_id, name = split_request_subject(raw.subject)
        try:
            event = WebhookEvent(name)
        except ValueError:
            return
        record = await self._record(request_id, event)
        webhook = record.webhook if record is not None else None
        if record is None or webhook is None or event not in webhook.events:
            return
        if event == WebhookEvent.PROGRESS and record.status.terminal:
            return  # it has ended: its end is the news now
        await self._deliver(raw, record, webhook, event)

    async def _deliver(self, raw: Msg, record: RequestRecord, webhook: WebhookSpec, event: WebhookEvent) -> None:
        meta = raw.metadata
        msg_id = webhook_id(record.id, event, meta.sequence.stream)
        earlier = await self._delivery(msg_id)
        if earlier is not None and earlier.status != DeliveryStatus.PENDING:
            return  # delivered (or given up on) before this redelivery
        now = utcnow()
        tries = min(PROGRESS_TRIES, self.consumer.max_deliver) if event == WebhookEvent.PROGRESS else None
        last = (meta.num_delivered or 1) >= (tries or self.consumer.max_deliver)
        delivery = WebhookDelivery(
            id=msg_id, request_id=record.id, event=event, url=webhook.url, status=DeliveryStatus.PENDING,
            attempts=meta.num_delivered or 1, first_try_at=earlier.first_try_at if earlier else now,
            last_try_at=now, tenant=record.tenant,
        )  # fmt: skip
        secret = choose_secret(await self.keys.webhook_secret(record.key_id), self.settings.secret)
        if secret is None:  # the key lost its secret and there is no deployment's: retrying cannot help
            await self._put(msgspec.structs.replace(delivery, status=DeliveryStatus.DEAD, error="no webhook secret"))
            _count(event, "dead")
            log.error("webhook not sent: no secret to sign it", extra={"request_id": record.id, "webhook_id": msg_id})
            return
        progress = decode(raw.data, RequestProgress) if event == WebhookEvent.PROGRESS else None
        body = payload(event, meta.timestamp, self.view(record), progress)
        status, error = await self._try(webhook.url, body, signed_headers(secret, msg_id, body, now))
        delivery = msgspec.structs.replace(delivery, response_status=status, error=error)
        if error is None:
            await self._put(msgspec.structs.replace(delivery, status=DeliveryStatus.DELIVERED))
            _count(event, "delivered")
            log.info(
                "webhook delivered", extra={"request_id": record.id, "webhook_id": msg_id, "host": _host(webhook.url)}
            )
            return
        await self._put(
            msgspec.structs.replace(delivery, status=DeliveryStatus.DEAD if last else DeliveryStatus.PENDING)
        )
        _count(event, "dead" if last else "failed")
        if last and tries is not None:
            return  # a progress event is dropped, not dead-lettered (see PROGRESS_TRIES)
        raise DeliveryFailed(f"webhook {msg_id} to {_host(webhook.url)}: {error}")

    async def _try(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        """One POST: (the receiver's status, None) when it took it; else (its status or None, why not)."""
        assert self._session is not None, "the sender is not prepared"
        try:
            await check_url(url, allow_private=allow_private_urls(), what="webhook.url")
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                response.release()
                if 200 <= response.status < 300:
                    return response.status, None
                return response.status, f"the receiver answered {response.status}"
        except UrlRefused as exc:
            return None, str(exc)
        except TimeoutError:
            return None, f"no answer within {self.settings.timeout_s:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _record(self, request_id: str, event: WebhookEvent) -> RequestRecord | None:
        """The request as the scheduler stored it. The index may lag the event by a moment; the scheduler
        stores the end before announcing it, so KV has it when the index does not yet."""
        record = self.index.get(request_id)
        expected = STATUS_OF.get(event)
        if record is not None and (expected is None or record.status == expected):
            return record
        kv = await self.broker.key_value(REQUESTS_BUCKET.name, declare=False)
        try:
            entry = await kv.get(request_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return record
        return decode(entry.value, RequestRecord) if entry.value else record

    async def _delivery(self, msg_id: str) -> WebhookDelivery | None:
        kv = await self.broker.key_value(WEBHOOK_DELIVERIES_BUCKET.name, declare=False)
        try:
            entry = await kv.get(msg_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        return decode(entry.value, WebhookDelivery) if entry.value else None

    async def _put(self, delivery: WebhookDelivery) -> None:
        kv = await self.broker.key_value(WEBHOOK_DELIVERIES_BUCKET.name, declare=False)
        await kv.put(delivery.id, msgspec.json.encode(delivery))

    async def deliveries(
        self, principal: Principal, status: DeliveryStatus | None, request_id: str | None, limit: int
    ) -> list[WebhookDelivery]:
        """The caller's tenant's deliveries (every tenant's for admins), the most recently tried first."""
        js = runtime.jetstream(self.broker)
        kv = await self.broker.key_value(WEBHOOK_DELIVERIES_BUCKET.name, declare=False)
        found = []
        for value, _ in (await runtime.kv_entries(js, kv, WEBHOOK_DELIVERIES_BUCKET.name)).values():
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                delivery = decode(value, WebhookDelivery)
                if (
                    principal.sees(delivery.tenant)
                    and (status is None or delivery.status == status)
                    and (request_id is None or delivery.request_id == request_id)
                ):
                    found.append(delivery)
        found.sort(key=lambda d: d.last_try_at, reverse=True)
        return found[:limit]
