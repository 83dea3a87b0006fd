import re

import pytest

from vibewave.runtime.pod_token import new_key, pod_token

pytestmark = pytest.mark.unit


def test_each_pod_has_its_own_token_and_only_the_key_gives_it():
    key = new_key()
    token = pod_token(key, "vibewave-3fa9c1")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert pod_token(key, "vibewave-3fa9c1") == token, "pod-manager and executor derive the same token"
    assert pod_token(key, "vibewave-3fa9c2") != token
    assert pod_token(new_key(), "vibewave-3fa9c1") != token
    assert key not in token
