"""Each pod's ComfyUI token: what the pod's proxy asks of every request (`Authorization: Bearer`).

ComfyUI has no authentication and RunPod's HTTP proxy is public, so every pod gets its own token at
create. It is not stored anywhere: pod-manager and the executor — the only services holding the key
`VIBEWAVE_POD_TOKEN_KEY` — derive it from the pod's name (unique per create) with HMAC-SHA256. So no KV
value, event or response needs to carry it, and a leaked token opens one pod, not the fleet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

POD_TOKEN_KEY_ENV = "VIBEWAVE_POD_TOKEN_KEY"
CONTEXT = b"vibewave pod comfyui token v1\x00"


def new_key() -> str:
    """A fresh key (256 bits, URL-safe text), e.g. for a deployment's Secret."""
    return secrets.token_urlsafe(32)


def pod_token(key: str, pod_name: str) -> str:
    """The pod's token: 43 URL-safe characters, the same for every holder of the key."""
    digest = hmac.new(key.encode(), CONTEXT + pod_name.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
