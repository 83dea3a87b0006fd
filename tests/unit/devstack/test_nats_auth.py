"""The NATS users `nats_auth` builds from the contract, read as nats-server would match them, and what
the devstack hands each child: its own NATS password and, for pod-manager alone, the RunPod key."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from vibewave.contracts.events import (
    BUCKETS,
    FLEET_BUCKET,
    PODS_BUCKET,
    REQUESTS_BUCKET,
    BucketSpec,
    PodOperation,
    RequestEvent,
    pod_rpc_subject,
    request_subject,
)
from vibewave.devstack import nats_auth, supervisor
from vibewave.devstack.nats_auth import Rule

pytestmark = pytest.mark.unit

ROLES = nats_auth.roles(cluster=True)


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more trailing tokens."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]):
            return False
    return len(tokens) == len(wanted)


def allowed(rules: tuple[Rule, ...], subject: str) -> bool:
    return any(matches(rule.subject, subject) for rule in rules)


def publishers(subject: str) -> set[str]:
    return {user for user, permissions in ROLES.items() if allowed(permissions.publish, subject)}


def subscribers(subject: str) -> set[str]:
    return {user for user, permissions in ROLES.items() if allowed(permissions.subscribe, subject)}


@pytest.mark.parametrize("event", [RequestEvent.COMPLETED, RequestEvent.FAILED, RequestEvent.CANCELLED])
def test_the_scheduler_alone_publishes_terminal_events(event: RequestEvent) -> None:
    assert publishers(request_subject("req-1", event)) == {"scheduler"}


def test_each_event_has_the_publisher_the_contract_names() -> None:
    assert publishers(request_subject("r", RequestEvent.SUBMITTED)) == {"api"}
    assert publishers(request_subject("r", RequestEvent.CANCEL_REQUESTED)) == {"api"}
    for event in (RequestEvent.STARTED, RequestEvent.PROGRESS, RequestEvent.ATTEMPT_FAILED,
                  RequestEvent.ATTEMPT_SUCCEEDED):  # fmt: skip
        assert publishers(request_subject("r", event)) == {"executor"}
    assert publishers("vw.dispatch.pod-1") == {"scheduler"}
    assert publishers("vw.pod.pod-1.ready") == {"pod-manager"}
    assert publishers("vw.fleet.demand") == {"scheduler"}


def test_buckets_are_written_by_their_writers_alone() -> None:
    assert publishers(f"$KV.{REQUESTS_BUCKET.name}.req-1") == {"scheduler"}
    assert publishers(f"$KV.{PODS_BUCKET.name}.pod-1") == {"pod-manager"}
    assert publishers(f"$KV.{FLEET_BUCKET.name}.status") == {"pod-manager"}
    assert publishers("$KV.leases.scheduler") == {"scheduler"}
    assert publishers("$KV.leases.pod-manager") == {"pod-manager"}


@pytest.mark.parametrize("operation", list(PodOperation))
def test_pod_manager_alone_answers_pod_rpcs_and_the_api_alone_calls_them(operation: PodOperation) -> None:
    assert subscribers(pod_rpc_subject(operation)) == {"pod-manager"}
    assert publishers(pod_rpc_subject(operation)) == {"api"}
    assert not ROLES["api"].responses


def test_streams_are_configured_by_the_scheduler_alone_and_nobody_has_wildcard_rights() -> None:
    for subject in ("$JS.API.STREAM.CREATE.REQUESTS", "$JS.API.STREAM.UPDATE.KV_requests"):
        assert publishers(subject) == {"scheduler"}
    assert publishers("$JS.API.STREAM.CREATE.FORGER") == set()
    assert publishers("$JS.API.STREAM.CREATE.VIBEWAVE_CLUSTER_PROBE") == {nats_auth.CLUSTER_PROBE}
    assert publishers("$JS.API.STREAM.PURGE.OBJ_outputs") == {"executor"}
    for subject in ("$JS.API.STREAM.DELETE.REQUESTS", "$JS.API.STREAM.PURGE.KV_requests",
                    "$JS.API.STREAM.MSG.DELETE.KV_requests", "$JS.API.CONSUMER.DELETE.REQUESTS.scheduler",
                    "_INBOX.abc.def", "anything.else"):  # fmt: skip
        assert publishers(subject) == set(), subject
    for permissions in ROLES.values():
        for rule in (*permissions.publish, *permissions.subscribe):
            assert rule.subject not in {">", "$JS.API.>", "$JS.>", "$KV.>", "vw.>", "vw.req.>"}, rule
            assert rule.why, rule


def test_the_observer_only_listens_to_public_channels() -> None:
    observer = ROLES[nats_auth.OBSERVER]
    assert not observer.publish and observer.as_config()["publish"] == {"deny": [">"]}
    assert subscribers(request_subject("r", RequestEvent.COMPLETED)) >= {"observer"}
    assert "observer" not in subscribers(request_subject("r", RequestEvent.SUBMITTED))
    assert "observer" not in subscribers(pod_rpc_subject(PodOperation.LIST))


def test_every_bucket_needs_its_access_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(nats_auth.BUCKET_ACCESS) >= {bucket.name for bucket in BUCKETS}
    monkeypatch.setattr(nats_auth, "BUCKETS", (*BUCKETS, BucketSpec("undeclared")))
    with pytest.raises(LookupError, match="undeclared"):
        nats_auth.roles()


def test_the_block_holds_the_passwords_or_refers_to_the_environment() -> None:
    passwords = nats_auth.new_passwords(nats_auth.USERS)
    inline = nats_auth.authorization_block(passwords)
    assert all(password in inline for password in passwords.values())
    by_env = nats_auth.authorization_block()
    assert "$VIBEWAVE_NATS_PASSWORD_POD_MANAGER" in by_env
    assert not any(password in by_env for password in passwords.values())
    assert nats_auth.describe()


def test_home_passwords_are_private_and_kept(tmp_path: Path) -> None:
    first = nats_auth.home_passwords(tmp_path)
    path = tmp_path / "nats-auth" / "passwords.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert nats_auth.home_passwords(tmp_path) == first == json.loads(path.read_text())
    assert len(set(first.values())) == len(first)


def settings(home: Path, *, nats_auth_on: bool) -> supervisor.StackSettings:
    return supervisor.StackSettings(
        home=home, nats_url=None, nats_port=4222, api_port=8000, raw_logs=False, color=False,
        runpod_emulator=False, emulator_port=8765, nats_auth=nats_auth_on,
    )  # fmt: skip


def test_make_run_gives_each_service_its_own_nats_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_secret")
    monkeypatch.setenv("VIBEWAVE_ADMIN_KEY", "an-admin-key-of-the-api")
    monkeypatch.setenv("NATS_PASSWORD", "an-outer-password")
    common, extra = supervisor.child_environments(settings(tmp_path, nats_auth_on=True), "nats://127.0.0.1:4222")
    passwords = nats_auth.home_passwords(tmp_path)
    assert "NATS_PASSWORD" not in common and "RUNPOD_API_KEY" not in common and "VIBEWAVE_ADMIN_KEY" not in common
    assert [name for name in supervisor.SERVICES if "VIBEWAVE_ADMIN_KEY" in extra[name]] == ["api"]
    for name in supervisor.SERVICES:
        assert extra[name]["NATS_USER"] == name
        assert extra[name]["NATS_PASSWORD"] == passwords[name]
        assert extra[name]["NATS_PROVISION"] == ("1" if name == "scheduler" else "0")
        others = {password for user, password in passwords.items() if user != name}
        assert not others & set(extra[name].values()), name
        assert ("RUNPOD_API_KEY" in extra[name]) == (name == "pod-manager"), name


def test_without_auth_outer_nats_credentials_go_to_the_services_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_secret")
    monkeypatch.setenv("NATS_USER", "shared")
    monkeypatch.setenv("NATS_PASSWORD", "an-outer-password")
    common, extra = supervisor.child_environments(settings(tmp_path, nats_auth_on=False), "nats://127.0.0.1:4222")
    assert "NATS_PASSWORD" not in common  # the emulator and nats-server get the common environment
    assert all(extra[name]["NATS_PASSWORD"] == "an-outer-password" for name in supervisor.SERVICES)
    assert [name for name in supervisor.SERVICES if "RUNPOD_API_KEY" in extra[name]] == ["pod-manager"]
    assert not (tmp_path / "nats-auth").exists()
