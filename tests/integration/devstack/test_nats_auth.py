"""The NATS users of `nats_auth` on a real nats-server: what each service may not do is refused by the
server (and nothing of it lands), what it must do still works, and the scheduler alone provisions."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import RePublish, StreamConfig

from vibewave.contracts.events import (
    FLEET_BUCKET,
    PODS_BUCKET,
    REQUESTS_BUCKET,
    REQUESTS_STREAM,
    PodOperation,
    RequestEvent,
    pod_rpc_subject,
    request_subject,
)
from vibewave.devstack import nats_auth
from vibewave.devstack.nats_server import EmbeddedNats
from vibewave.runtime import broker as runtime
from vibewave.runtime.settings import CommonSettings, Secret

pytestmark = pytest.mark.integration

ADMIN = nats_auth.Permissions(
    publish=(nats_auth.Rule(">", "the test's own checks"),), subscribe=(nats_auth.Rule(">", "the test's own checks"),)
)
PASSWORDS = nats_auth.new_passwords([*nats_auth.USERS, "admin"])
TERMINAL = (RequestEvent.COMPLETED, RequestEvent.FAILED, RequestEvent.CANCELLED)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A server of the module's own with the services' users (and an admin for the test's checks), its
    contract provisioned by the scheduler's user."""
    users = {**nats_auth.roles(), "admin": ADMIN}
    nats_server = EmbeddedNats(
        tmp_path_factory.mktemp("nats-auth"), authorization=nats_auth.authorization_block(PASSWORDS, users)
    )
    nats_server.start()
    try:
        asyncio.run(_provision_as_scheduler(nats_server.url, tmp_path_factory.mktemp("home")))
        yield nats_server
    finally:
        nats_server.stop()


def settings_of(user: str, url: str, home: Path, *, provision: bool = True) -> CommonSettings:
    return CommonSettings(nats_url=url, home=home, log_level="INFO", debug=False, replicas=1, nats_user=user,
                          nats_password=Secret(PASSWORDS[user]), provision=provision)  # fmt: skip


async def _provision_as_scheduler(url: str, home: Path) -> None:
    common = settings_of("scheduler", url, home)
    broker = runtime.new_broker("scheduler", common)
    await runtime.connect(broker)
    try:
        await runtime.provision(broker, common)
    finally:
        await broker.stop()


class Connection:
    """One user's connection, with the errors the server sent it (permission violations arrive so)."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors
        self.js = nc.jetstream(timeout=1)

    async def refused(self, what: str, subject: str) -> bool:
        """Whether the server reported a permissions violation for `what` ("publish", "subscription") to `subject`."""
        await asyncio.sleep(0)
        expected = f'permissions violation for {what} to "{subject}"'.lower()
        for _ in range(100):
            if any(expected in error.lower() for error in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False


Connect = Callable[[str], Awaitable["Connection"]]


@pytest.fixture
async def connect(server: EmbeddedNats) -> AsyncIterator[Connect]:
    opened: list[Client] = []

    async def open_as(user: str) -> Connection:
        errors: list[str] = []

        async def note(error: Exception) -> None:
            errors.append(str(error))

        nc = await nats.connect(server.url, user=user, password=PASSWORDS[user], error_cb=note, connect_timeout=2)
        opened.append(nc)
        return Connection(nc, errors)

    yield open_as
    for nc in opened:
        await nc.close()


async def stored(admin: Connection, subject: str) -> bool:
    try:
        await admin.js.get_last_msg(REQUESTS_STREAM.name, subject)
    except nats.js.errors.NotFoundError:
        return False
    return True


@pytest.mark.parametrize("user", ["executor", "api", "pod-manager", "observer"])
@pytest.mark.parametrize("event", TERMINAL)
async def test_only_the_scheduler_publishes_terminal_events(connect: Connect, user: str, event: RequestEvent) -> None:
    forger, admin = await connect(user), await connect("admin")
    subject = request_subject(f"req-forged-by-{user}", event)
    await forger.nc.publish(subject, b'{"request_id": "x"}')
    await forger.nc.flush()
    assert await forger.refused("publish", subject), forger.errors
    assert not await stored(admin, subject), "the forged event landed in REQUESTS"
    with pytest.raises(nats.errors.TimeoutError):  # a JetStream publish is refused alike: no ack ever comes
        await forger.js.publish(subject, b"{}", timeout=0.5)
    assert not await stored(admin, subject)


async def test_the_scheduler_publishes_a_terminal_event(connect: Connect) -> None:
    scheduler, admin = await connect("scheduler"), await connect("admin")
    subject = request_subject("req-by-scheduler", RequestEvent.COMPLETED)
    ack = await scheduler.js.publish(subject, b'{"request_id": "req-by-scheduler"}')
    assert ack.stream == REQUESTS_STREAM.name
    assert await stored(admin, subject)
    assert not scheduler.errors


@pytest.mark.parametrize(
    ("bucket", "writer"), [(REQUESTS_BUCKET.name, "scheduler"), (PODS_BUCKET.name, "pod-manager"),
                           (FLEET_BUCKET.name, "pod-manager")],
)  # fmt: skip
@pytest.mark.parametrize("user", ["executor", "api", "scheduler", "pod-manager", "observer"])
async def test_a_bucket_is_written_by_its_writer_alone(connect: Connect, bucket: str, writer: str, user: str) -> None:
    client, admin = await connect(user), await connect("admin")
    key = f"key-{user}"
    if user == writer:
        await (await client.js.key_value(bucket)).put(key, b"{}")
        assert (await (await admin.js.key_value(bucket)).get(key)).value == b"{}"
        return
    with pytest.raises(nats.errors.TimeoutError):
        await client.js.publish(f"$KV.{bucket}.{key}", b"forged", timeout=0.5)
    assert await client.refused("publish", f"$KV.{bucket}.{key}")
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await (await admin.js.key_value(bucket)).get(key)


async def test_the_executor_reads_requests_but_cannot_write_them(connect: Connect) -> None:
    executor, scheduler = await connect("executor"), await connect("scheduler")
    await (await scheduler.js.key_value(REQUESTS_BUCKET.name)).put("req-read", b"record")
    requests = await executor.js.key_value(REQUESTS_BUCKET.name)
    assert (await requests.get("req-read")).value == b"record"
    with pytest.raises(nats.errors.TimeoutError):
        await requests.put("req-read", b"forged")
    assert await executor.refused("publish", f"$KV.{REQUESTS_BUCKET.name}.req-read")
    assert (await requests.get("req-read")).value == b"record"


@pytest.mark.parametrize("user", ["executor", "api", "scheduler", "observer"])
async def test_only_pod_manager_may_answer_pod_rpcs(connect: Connect, user: str) -> None:
    impostor, api = await connect(user), await connect("api")
    subject = pod_rpc_subject(PodOperation.TERMINATE)

    async def answer(msg: Msg) -> None:
        await msg.respond(b'{"status": 200}')

    await impostor.nc.subscribe(subject, cb=answer)
    await impostor.nc.flush()
    assert await impostor.refused("subscription", subject), impostor.errors
    with pytest.raises(nats.errors.NoRespondersError):
        await api.nc.request(subject, b"{}", timeout=1)


async def test_pod_manager_answers_the_api_and_nobody_else_can_reply(connect: Connect) -> None:
    pod_manager, api, executor = await connect("pod-manager"), await connect("api"), await connect("executor")
    subject = pod_rpc_subject(PodOperation.LIST)
    inboxes: list[str] = []

    async def answer(msg: Msg) -> None:
        inboxes.append(msg.reply)
        await msg.respond(b'{"status": 200}')

    await pod_manager.nc.subscribe(subject, cb=answer)
    await pod_manager.nc.flush()
    assert (await api.nc.request(subject, b"{}", timeout=2)).data == b'{"status": 200}'
    assert not pod_manager.errors
    await executor.nc.publish(inboxes[0], b'{"status": 200, "data": "forged"}')  # no allow_responses of its own
    await executor.nc.flush()
    assert await executor.refused("publish", inboxes[0])


async def test_no_service_but_the_scheduler_may_configure_a_stream(connect: Connect) -> None:
    """A stream's RePublish is published by the server whatever the configuring user may publish: so
    creating or updating a stream is the provisioner's alone."""
    executor = await connect("executor")
    forging = StreamConfig(
        name="FORGER", subjects=["forger.*"],
        republish=RePublish(src="forger.*", dest="vw.req.{{wildcard(1)}}.completed"),
    )  # fmt: skip
    with pytest.raises(nats.errors.TimeoutError):
        await executor.js.add_stream(forging)
    assert await executor.refused("publish", "$JS.API.STREAM.CREATE.FORGER")
    config = (await executor.js.stream_info(REQUESTS_STREAM.name)).config
    with pytest.raises(nats.errors.TimeoutError):
        await executor.js.update_stream(dataclasses.replace(config, max_age=1.0))
    assert await executor.refused("publish", f"$JS.API.STREAM.UPDATE.{REQUESTS_STREAM.name}")


async def test_a_wrong_password_or_none_is_refused(server: EmbeddedNats) -> None:
    async def quiet(_error: Exception) -> None:
        pass

    for credentials in ({"user": "executor", "password": "not-its-password"}, {}):
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
            await nats.connect(server.url, allow_reconnect=False, connect_timeout=2, error_cb=quiet, **credentials)


def test_passwords_can_come_from_the_servers_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block without passwords names `$VIBEWAVE_NATS_PASSWORD_<USER>`: a config map plus secrets."""
    for user, password in PASSWORDS.items():
        monkeypatch.setenv(nats_auth.password_env(user), password)
    with EmbeddedNats(tmp_path, authorization=nats_auth.authorization_block()) as nats_server:

        async def connect_as_executor() -> None:
            nc = await nats.connect(nats_server.url, user="executor", password=PASSWORDS["executor"])
            await nc.close()

        asyncio.run(connect_as_executor())


async def test_a_service_that_may_not_provision_waits_for_the_scheduler(tmp_path: Path) -> None:
    users = nats_auth.roles()
    with EmbeddedNats(tmp_path / "nats", authorization=nats_auth.authorization_block(PASSWORDS, users)) as fresh:
        common = settings_of("executor", fresh.url, tmp_path, provision=False)
        broker = runtime.new_broker("executor", common)
        await runtime.connect(broker)
        try:
            with pytest.raises(TimeoutError, match="KV_requests"):
                await runtime.wait_provisioned(runtime.jetstream(broker), timeout=0.5)
            waiting = asyncio.create_task(runtime.provision(broker, common))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            await _provision_as_scheduler(fresh.url, tmp_path)
            await asyncio.wait_for(waiting, 10)
        finally:
            await broker.stop()
