"""The contract as documents: JSON Schema for the REST models (the bus's AsyncAPI document is built from
the services' FastStream apps: `python -m vibewave.devstack.asyncapi`).

Built from the msgspec Structs themselves, so the documents cannot drift from the code; a test fails
when the checked-in copies under `contracts/schema/` are stale. Regenerate with
`python -m vibewave.contracts.export`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from vibewave.contracts.models import REST_MODELS

VERSION = "0.1.0"
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schema"


def rest_json_schema() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(REST_MODELS, ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Vibewave REST models",
        "$defs": components,
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


DOCUMENTS = {"rest-models.schema.json": rest_json_schema}


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for filename, build in DOCUMENTS.items():
        (SCHEMA_DIR / filename).write_text(render(build()))
        print(f"wrote {SCHEMA_DIR / filename}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
