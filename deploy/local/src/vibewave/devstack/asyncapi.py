"""The AsyncAPI document of the bus, built from what the four FastStream apps declare.

Each service's broker is built (never connected) and read: every subscriber and publisher gives its
subject, its stream or KV bucket, its durable and — with the contract's channel table — its payload
Struct. So the document says which service sends and which receives on each channel as the code does.
The payload schemas come from msgspec (FastStream's own generator cannot read Structs). Channels carry
the stream they are stored in, the headers every message has (`Nats-Msg-Id`, `traceparent`), and whether
they are public (other services may subscribe) or internal to Vibewave.

`python -m vibewave.devstack.asyncapi` writes `contracts/schema/asyncapi.json`; a test fails when the
checked-in copy is stale.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from faststream.nats import NatsBroker

from vibewave.contracts.events import CHANNELS, STREAMS, Channel
from vibewave.contracts.export import SCHEMA_DIR, VERSION, render
from vibewave.runtime.settings import CommonSettings

HEADERS_SCHEMA = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {"type": "string", "description": "JetStream dedupe id: a retried publish is stored once"},
        "traceparent": {"type": "string", "description": "W3C trace context: one request is one trace"},
    },
}


@dataclass(frozen=True)
class Endpoint:
    """One subscriber or publisher of one service, as its broker declares it."""

    service: str
    action: str  # "send" | "receive"
    subject: str
    stream: str | None = None
    durable: str | None = None
    bucket: str | None = None
    schema: type[msgspec.Struct] | None = None


def brokers() -> dict[str, NatsBroker]:
    """Every service's broker, as its process builds it (default settings; nothing is connected)."""
    from vibewave.api.gateway import Gateway
    from vibewave.api.settings import ApiSettings
    from vibewave.executor.service import ExecutorService
    from vibewave.executor.settings import ExecutorSettings
    from vibewave.pod_manager.service import PodManagerService
    from vibewave.pod_manager.settings import PodManagerSettings
    from vibewave.scheduler.service import SchedulerService
    from vibewave.scheduler.settings import SchedulerSettings

    common = CommonSettings(nats_url="nats://localhost:4222", home=Path(".vibewave"), log_level="INFO", debug=False,
                            replicas=1)  # fmt: skip
    builders: dict[str, Callable[[], NatsBroker]] = {
        "api": lambda: Gateway(ApiSettings.from_env(common)).broker,
        "scheduler": lambda: SchedulerService(SchedulerSettings.from_env(common)).broker,
        "pod-manager": lambda: PodManagerService(PodManagerSettings.from_env(common)).broker,
        "executor": lambda: ExecutorService(ExecutorSettings.from_env(common)).broker,
    }
    return {service: build() for service, build in builders.items()}


def endpoints(service: str, broker: NatsBroker) -> list[Endpoint]:
    found: list[Endpoint] = []
    for sub in broker.subscribers:
        kv = getattr(sub, "kv_watch", None)
        stream = getattr(sub, "stream", None)
        config = getattr(sub, "config", None)
        filters = list(getattr(config, "filter_subjects", None) or []) or [_subject(sub)]
        for subject in filters:
            found.append(Endpoint(
                service, "receive", subject,
                stream=stream.name if stream is not None else None,
                durable=getattr(config, "durable_name", None),
                bucket=kv.name if kv is not None else None,
            ))  # fmt: skip
    for pub in broker.publishers:
        stream = getattr(pub, "stream", None)
        schema = pub.schema if isinstance(pub.schema, type) and issubclass(pub.schema, msgspec.Struct) else None
        found.append(Endpoint(service, "send", _subject(pub), stream=getattr(stream, "name", None),
                              schema=schema))  # fmt: skip
    return found


def _subject(endpoint: object) -> str:
    """A subscriber's or publisher's declared subject (FastStream keeps it as an `Address`)."""
    address = getattr(endpoint, "subject", None)
    return str(getattr(address, "template", address or ""))


def _pattern(channel: Channel) -> re.Pattern[str]:
    """The channel's address as a regex over subjects with `{param}`, `*` or `>` in its parameter places."""
    parts = [r"[^.]+" if part.startswith("{") else re.escape(part) for part in channel.address.split(".")]
    return re.compile(r"\.".join(parts))


def _channel_for(subject: str) -> Channel | None:
    """The contract channel a declared subject (wildcards for its parameters) is, if any."""
    concrete = subject.replace(">", "x").replace("*", "x")
    for channel in CHANNELS:
        if channel.address.startswith("vw.") and _pattern(channel).fullmatch(concrete):
            if subject.endswith(">") and not channel.address.endswith("}"):
                continue
            return channel
    return None


def _stream_of(channel: Channel) -> str | None:
    """The stream that stores a channel's messages (core NATS channels have none)."""
    for spec in STREAMS:
        if any(channel.address.startswith(subject.removesuffix(">")) for subject in spec.subjects):
            return spec.name
    return None


def _key(channel: Channel) -> str:
    return channel.message.__name__ if not channel.address.startswith("vw.dlq") else "DeadLetter"


def asyncapi_document(found: list[Endpoint] | None = None) -> dict[str, Any]:
    found = found if found is not None else [e for s, b in brokers().items() for e in endpoints(s, b)]
    _, components = msgspec.json.schema_components(
        [c.message for c in CHANNELS], ref_template="#/components/schemas/{name}"
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel in CHANNELS:
        name = _key(channel)
        channels[name] = {
            "address": channel.address,
            "description": channel.description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "x-public": channel.public,
            **({"x-stream": stored_in} if (stored_in := _stream_of(channel)) else {}),
            **({"parameters": {p: {"description": p.replace("_", " ")} for p in channel.parameters}}
               if channel.parameters else {}),
        }  # fmt: skip
    kv_channels: dict[str, Any] = {}
    for endpoint in sorted(found, key=lambda e: (e.service, e.action, e.subject, e.durable or "")):
        stream: str | None
        if endpoint.bucket is not None:
            key = f"kv-{endpoint.bucket}"
            kv_channels[key] = {
                "address": f"$KV.{endpoint.bucket}.{{key}}",
                "description": f"KV bucket `{endpoint.bucket}` (watched)",
                "parameters": {"key": {"description": "the key"}},
                "x-public": False,
            }
            channel_ref, stream = key, f"KV_{endpoint.bucket}"
        else:
            matched = _channel_for(endpoint.subject)
            if matched is None:
                continue
            channel_ref, stream = _key(matched), endpoint.stream
        operation: dict[str, Any] = {
            "action": endpoint.action,
            "channel": {"$ref": f"#/channels/{channel_ref}"},
            "summary": f"{endpoint.service} {'publishes' if endpoint.action == 'send' else 'subscribes to'} "
            f"{endpoint.subject}",
            "x-service": endpoint.service,
            "x-subject": endpoint.subject,
        }
        if endpoint.durable:
            operation["x-durable"] = endpoint.durable
        if stream:
            operation["x-stream"] = stream
        durable = f".{endpoint.durable}" if endpoint.durable else ""  # one subject, several consumers of a service
        operations[f"{endpoint.service}.{endpoint.action}.{channel_ref}.{endpoint.subject}{durable}"] = operation
    channels.update(kv_channels)
    messages = {
        _key(c): {"payload": {"$ref": f"#/components/schemas/{c.message.__name__}"}, "headers": HEADERS_SCHEMA}
        for c in CHANNELS
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Vibewave events",
            "version": VERSION,
            "description": "Messages on NATS between the api, scheduler, pod-manager and executor, as their "
            "FastStream apps declare them. Every message carries Nats-Msg-Id and W3C traceparent headers; "
            "channels marked x-public are for other services to subscribe to.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "localhost:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": components},
    }


def main() -> int:
    path = SCHEMA_DIR / "asyncapi.json"
    path.write_text(render(asyncapi_document()))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def dumps() -> str:
    return json.dumps(asyncapi_document(), indent=2, sort_keys=True)


if __name__ == "__main__":
    raise SystemExit(main())
