"""The contract as documents: AsyncAPI 3 for the bus, JSON Schema for the REST models.

Built from the msgspec Structs themselves (faststream's generator cannot read Structs), so the documents
cannot drift from the code; a test fails when the checked-in copies under `contracts/schema/` are stale.
Regenerate with `python -m vibewave.contracts.export`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from vibewave.contracts.events import CHANNELS
from vibewave.contracts.models import REST_MODELS

VERSION = "0.1.0"
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schema"


def asyncapi_document() -> dict[str, Any]:
    messages = [channel.message for channel in CHANNELS]
    _, components = msgspec.json.schema_components(messages, ref_template="#/components/schemas/{name}")
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel in CHANNELS:
        name = channel.message.__name__
        channels[name] = {
            "address": channel.address,
            "description": channel.description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            **({"parameters": {p: {"description": p.replace("_", " ")} for p in channel.parameters}}
               if channel.parameters else {}),
        }  # fmt: skip
        operations[f"publish{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"published by {channel.publisher}",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Vibewave events",
            "version": VERSION,
            "description": "Messages on NATS JetStream between the api, scheduler, pod-manager and executor. "
            "Every message carries Nats-Msg-Id and W3C traceparent headers.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "localhost:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {
                c.message.__name__: {"payload": {"$ref": f"#/components/schemas/{c.message.__name__}"}}
                for c in CHANNELS
            },
            "schemas": components,
        },
    }


def rest_json_schema() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(REST_MODELS, ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Vibewave REST models",
        "$defs": components,
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


DOCUMENTS = {"asyncapi.json": asyncapi_document, "rest-models.schema.json": rest_json_schema}


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for filename, build in DOCUMENTS.items():
        (SCHEMA_DIR / filename).write_text(render(build()))
        print(f"wrote {SCHEMA_DIR / filename}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
