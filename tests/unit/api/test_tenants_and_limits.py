"""The index files each request under its tenant and key (what a client key may read, how many of its
requests are open), and undoes it all when the request moves or expires; the open-request limit counts
what the index knows plus what this replica accepted that the index has not seen yet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from vibewave.api.auth import ADMIN, OPEN, Principal
from vibewave.api.index import RequestIndex
from vibewave.api.limits import LimitExceeded, Limits, OverBatchLimit
from vibewave.contracts.events import RequestRecord
from vibewave.contracts.models import RequestStatus, Scope, WorkflowResult
from vibewave.runtime.broker import encode

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def record(n: int, tenant: str | None, status: RequestStatus = RequestStatus.PENDING, **extra: Any) -> RequestRecord:
    return RequestRecord(
        id=f"req-{n:016x}", workflow_name="comfyui_image_qwen", inputs={"prompt": "p"}, status=status,
        created_at=T0 + timedelta(seconds=n), updated_at=T0 + timedelta(seconds=n), tenant=tenant,
        key_id=f"key-{tenant}" if tenant else None, **extra,
    )  # fmt: skip


def client(tenant: str, **limits: Any) -> Principal:
    return Principal(key_id=f"key-{tenant}", tenant=tenant, scopes=frozenset({Scope.GENERATE}), **limits)


def test_each_tenant_reads_only_its_own_requests_and_files() -> None:
    index = RequestIndex()
    for n, tenant in enumerate(["a", "a", "b", None]):
        index.apply(record(n, tenant).id, encode(record(n, tenant)))
    done = record(0, "a", RequestStatus.COMPLETED, result=WorkflowResult(success=True, files=["qwen_0_001.png"]))
    index.apply(done.id, encode(done))

    assert [r.id for r in index.newest(tuple(RequestStatus), 10, "a")] == [record(1, "a").id, done.id]
    assert [r.id for r in index.newest(tuple(RequestStatus), 10, "b")] == [record(2, "b").id]
    assert len(index.newest(tuple(RequestStatus), 10)) == 4  # no tenant: every request (admins)
    assert index.count(RequestStatus.COMPLETED, "a") == 1 and index.count(RequestStatus.PENDING, "a") == 1
    assert index.total("a") == 2 and index.total("nobody") == 0
    assert index.file_tenant == {"qwen_0_001.png": "a"}
    assert index.open_by_key == {"key-a": 1, "key-b": 1}

    index.remove(done.id)
    assert "qwen_0_001.png" not in index.file_tenant and index.total("a") == 1
    for n in (1, 2):
        index.remove(record(n, "x").id)
    assert index.by_tenant == {} and index.open_by_key == {}


def test_principals_see_their_tenant_and_admins_everything() -> None:
    alice = client("a")
    assert alice.sees("a") and not alice.sees("b") and not alice.sees(None)
    assert ADMIN.sees("b") and ADMIN.sees(None) and OPEN.sees("a")
    assert alice.allows([Scope.GENERATE]) and not alice.allows([Scope.ADMIN]) and ADMIN.allows([Scope.READ])
    assert ADMIN.client_key is None and alice.client_key == "key-a"


async def test_the_open_request_limit_counts_the_index_and_what_is_in_flight() -> None:
    index = RequestIndex()
    limits = Limits(broker=None, index=index)  # type: ignore[arg-type]  # no rate limit: no NATS needed
    alice = client("a", max_open_requests=3)
    index.apply(record(1, "a").id, encode(record(1, "a")))
    await limits.admit(alice, 2)  # 1 open + 2 = 3
    limits.accepted(alice, [record(2, "a").id, record(3, "a").id])
    with pytest.raises(LimitExceeded) as refused:
        await limits.admit(alice, 1)
    assert "3 unfinished requests" in str(refused.value) and refused.value.retry_after == "2"

    index.apply(record(2, "a").id, encode(record(2, "a")))  # the index caught up: counted once, not twice
    assert limits.open_requests("key-a") == 3
    finished = msgspec.structs.replace(record(1, "a"), status=RequestStatus.COMPLETED)
    index.apply(finished.id, encode(finished))
    assert limits.open_requests("key-a") == 2
    await limits.admit(alice, 1)
    with pytest.raises(OverBatchLimit):
        await limits.admit(alice, 4)
    await limits.admit(ADMIN, 10_000)  # the operator has no per-key limits
