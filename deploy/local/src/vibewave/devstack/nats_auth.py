"""NATS users for Vibewave: one per service, each allowed only what that service does (nats-server
`authorization`), so that no process can forge another's events or answer another's calls.

Without credentials any local process may publish `vw.req.<id>.completed` or answer the pod admin calls.
With them (`make run` with VIBEWAVE_NATS_AUTH=1) the server enforces what the contract says
(`vibewave.contracts.events`):

- only the scheduler publishes the public terminal events (`completed`, `failed`, `cancelled`), the
  placements, the assignments and the demand, and writes KV `requests`;
- only pod-manager answers the pod admin calls (`vw.rpc.pods.<op>`), announces pod changes and writes
  KV `pods` and `fleet`;
- only the api submits and cancels requests, calls pod-manager, writes its own buckets, and sends the
  webhooks (its durable `webhooks` on REQUESTS);
- the executor reports attempts (`started`, `progress`, `attempt_*`) and stores the files;
- `observer`, for clients that follow the public channels: subscribe only.

Every rule carries the reason it exists (`Rule.why`; `python -m vibewave.devstack.nats_auth --describe`
lists them). What all services share:

- `_INBOX.>` (subscribe): replies to their own requests — JetStream API calls, publish acks, fetches, KV
  and object reads, admin calls. nats-py and FastStream put every inbox under `_INBOX.`, so a service
  could listen to another's replies; per-service inbox prefixes would close that.
- `allow_responses`: one reply to each request a service received (a `$SRV.PING`, an admin call), so no
  one needs to publish to `_INBOX.>`.
- JetStream acks (`$JS.ACK.<stream>.<durable>.>`) and fetches only on the service's own durables; flow
  control (`$JS.FC.<stream>.>`) only on the streams it watches.

Why nobody gets `$JS.API.>`: whoever may create or update a stream can give it a RePublish (or a source
with a subject transform) that the *server* publishes to any subject, whatever the permissions of the
user who configured it — checked: such a republish reached `vw.req.*.completed` subscribers and the
REQUESTS stream. So only the scheduler, which writes the terminal events anyway, creates and updates the
contract's streams, buckets and object store (NATS_PROVISION=1); the other services wait until they
exist (NATS_PROVISION=0). Purging is given only to the writer of that stream, and creating a consumer
only on the streams a service reads. (A push consumer's deliver subject is not constrained by any
permission, but JetStream delivers there under each message's original subject: a redirect of what
the stream holds, not a forged event.)

The output is plain nats-server configuration: `authorization_block(passwords)` with the passwords
written in (the devstack keeps that file at mode 0600), or `authorization_block()` referring to
`$VIBEWAVE_NATS_PASSWORD_<USER>`, which nats-server resolves from its environment — a config map plus
secrets, for compose or Kubernetes (`python -m vibewave.devstack.nats_auth > auth.conf`, then
`include auth.conf` in the server's config). Each service gets `service_environment(user, password)`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vibewave.contracts.events import (
    BATCHES_BUCKET,
    BUCKETS,
    CHANNELS,
    DEMAND_SUBJECT,
    DISPATCH_PREFIX,
    EXECUTOR_CONSUMER,
    FLEET_BUCKET,
    IDEMPOTENCY_BUCKET,
    LEASES_BUCKET,
    OBJECT_STORES,
    OUTPUT_NAMES_BUCKET,
    OUTPUTS_STORE,
    POD_FAULTS_CONSUMER,
    POD_PREFIX,
    POD_RPC_PREFIX,
    PODS_BUCKET,
    REQ_PREFIX,
    REQUESTS_BUCKET,
    REQUESTS_STREAM,
    SCHEDULER_CONSUMER,
    STREAMS,
    WEBHOOKS_CONSUMER,
    BucketSpec,
    ConsumerSpec,
    RequestEvent,
    dead_letter_subject,
)
from vibewave.runtime.health import SERVICE_NAMES, micro_name

SERVICES = ("api", "scheduler", "pod-manager", "executor")
OBSERVER = "observer"
USERS = (*SERVICES, OBSERVER)
PROVISIONER = "scheduler"  # the one service whose user creates and updates streams (see above)
CLUSTER_PROBE = "devstack"  # `make run-cluster`'s readiness probe (nats_cluster.wait_for_jetstream)
CLUSTER_PROBE_STREAM = "VIBEWAVE_CLUSTER_PROBE"
PASSWORD_ENV_PREFIX = "VIBEWAVE_NATS_PASSWORD_"
JS = "$JS.API"

TERMINAL = (RequestEvent.COMPLETED, RequestEvent.FAILED, RequestEvent.CANCELLED)
ATTEMPT_REPORTS = (
    RequestEvent.STARTED, RequestEvent.PROGRESS, RequestEvent.ATTEMPT_FAILED, RequestEvent.ATTEMPT_SUCCEEDED,
)  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """One subject a user may publish or subscribe to, and why it may."""

    subject: str
    why: str


@dataclass(frozen=True)
class Permissions:
    publish: tuple[Rule, ...] = ()
    subscribe: tuple[Rule, ...] = ()
    responses: str = ""  # why it may answer the requests it receives (allow_responses); "": it may not

    def as_config(self) -> dict[str, object]:
        """The `permissions` map of a nats-server user (each subject once, in order). No rule is a deny of
        everything: to nats-server an empty allow list means no restriction at all."""
        config: dict[str, object] = {
            "publish": {"allow": _subjects(self.publish)} if self.publish else {"deny": [">"]},
            "subscribe": {"allow": _subjects(self.subscribe)} if self.subscribe else {"deny": [">"]},
        }
        if self.responses:
            config["allow_responses"] = True
        return config


@dataclass
class _Grants:
    """Collects one user's rules, so that each service below reads as a list of what it does."""

    publish: list[Rule] = field(default_factory=list)
    subscribe: list[Rule] = field(default_factory=list)

    def pub(self, why: str, *subjects: str) -> None:
        self.publish.extend(Rule(subject, why) for subject in subjects)

    def sub(self, why: str, *subjects: str) -> None:
        self.subscribe.extend(Rule(subject, why) for subject in subjects)

    def built(self, responses: str = "") -> Permissions:
        return Permissions(tuple(self.publish), tuple(self.subscribe), responses)


def _subjects(rules: Iterable[Rule]) -> list[str]:
    return list(dict.fromkeys(rule.subject for rule in rules))


def _events(*events: RequestEvent) -> tuple[str, ...]:
    return tuple(f"{REQ_PREFIX}.*.{event}" for event in events)


def _contract_streams() -> list[str]:
    """The JetStream stream behind every stream, bucket and object store of the contract."""
    return [s.name for s in STREAMS] + [f"KV_{b.name}" for b in BUCKETS] + [f"OBJ_{o.name}" for o in OBJECT_STORES]


# ------------------------------------------------------------------------------------------- KV buckets


@dataclass(frozen=True)
class BucketAccess:
    """Who may do what with a KV bucket: write it (`own_key`: only the key named after the writer, as
    with the leader leases), watch or read it whole (an ordered consumer), or only get keys."""

    writers: tuple[str, ...]
    watchers: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    own_key: bool = False


# Every bucket of the contract must be here: one that is not makes `roles()` raise, rather than leave
# it to whoever happens to have some wider right.
BUCKET_ACCESS: dict[str, BucketAccess] = {
    REQUESTS_BUCKET.name: BucketAccess(writers=("scheduler",), watchers=("scheduler", "api"), readers=("executor",)),
    PODS_BUCKET.name: BucketAccess(writers=("pod-manager",), watchers=("pod-manager", "scheduler", "api")),
    FLEET_BUCKET.name: BucketAccess(writers=("pod-manager",), watchers=("scheduler", "api")),
    OUTPUT_NAMES_BUCKET.name: BucketAccess(writers=("executor",)),
    IDEMPOTENCY_BUCKET.name: BucketAccess(writers=("api",)),
    BATCHES_BUCKET.name: BucketAccess(writers=("api",)),
    LEASES_BUCKET.name: BucketAccess(writers=("scheduler", "pod-manager"), own_key=True),
    "api_keys": BucketAccess(writers=("api",), watchers=("api",)),  # listing the keys reads it whole
    "rate_limits": BucketAccess(writers=("api",)),
    "webhook_deliveries": BucketAccess(writers=("api",), watchers=("api",)),  # the deliveries list reads it whole
    "uploads": BucketAccess(writers=("api",)),
}


def _kv_read(grants: _Grants, bucket: BucketSpec) -> None:
    stream = f"KV_{bucket.name}"
    grants.pub(
        f"opens and gets keys of KV `{bucket.name}` ({bucket.description})",
        f"{JS}.STREAM.INFO.{stream}",
        f"{JS}.STREAM.MSG.GET.{stream}",
        f"{JS}.DIRECT.GET.{stream}.>",  # how a bucket made with allow_direct is read
    )


def _kv_watch(grants: _Grants, bucket: BucketSpec) -> None:
    """A watch, or a whole-bucket read (`kv_entries`): an ephemeral ordered push consumer."""
    stream = f"KV_{bucket.name}"
    _kv_read(grants, bucket)
    grants.pub(
        f"watches or reads whole KV `{bucket.name}` (an ordered consumer: create, info, flow control)",
        f"{JS}.CONSUMER.CREATE.{stream}",
        f"{JS}.CONSUMER.INFO.{stream}.*",
        f"$JS.FC.{stream}.>",
    )


def _buckets(grants: _Grants, service: str) -> None:
    for bucket in BUCKETS:
        access = BUCKET_ACCESS.get(bucket.name)
        if access is None:
            raise LookupError(f"KV bucket {bucket.name!r} of the contract has no entry in nats_auth.BUCKET_ACCESS")
        if service in access.watchers:
            _kv_watch(grants, bucket)
        elif service in access.readers or service in access.writers:
            _kv_read(grants, bucket)
        if service in access.writers:
            keys, whose = (service, "its own key") if access.own_key else (">", "a writer")
            grants.pub(f"writes KV `{bucket.name}`, as {whose} ({bucket.description})", f"$KV.{bucket.name}.{keys}")


# ------------------------------------------------------------------------------------ what each one does


def _service(grants: _Grants, service: str) -> None:
    """What every service does: replies to its requests, its buckets, and its liveness answers."""
    grants.sub("replies to its own requests (JetStream API, publish acks, fetches, KV and object reads)", "_INBOX.>")
    _buckets(grants, service)
    if service in SERVICE_NAMES:
        name = micro_name(service)
        grants.sub("answers the NATS service API (`$SRV.PING` of /health)", "$SRV.*", f"$SRV.*.{name}",
                   f"$SRV.*.{name}.*")  # fmt: skip
    if service == PROVISIONER:
        grants.pub("JetStream account info (creating buckets asks for it)", f"{JS}.INFO")
        for stream in _contract_streams():
            grants.pub(f"provisions {stream} as the contract says (create, or update)", f"{JS}.STREAM.CREATE.{stream}",
                       f"{JS}.STREAM.UPDATE.{stream}", f"{JS}.STREAM.INFO.{stream}")  # fmt: skip
    else:
        grants.pub("waits until the scheduler has provisioned the contract (NATS_PROVISION=0)",
                   *(f"{JS}.STREAM.INFO.{stream}" for stream in _contract_streams()))  # fmt: skip


def _durable(grants: _Grants, spec: ConsumerSpec) -> None:
    """A durable pull consumer of the service's own: found or created, fetched from, acknowledged, and
    its last failures sent to the dead letters."""
    stream, durable = spec.stream, spec.durable
    grants.pub(
        f"consumes {stream} through its durable `{durable}` (info, create, fetch)",
        f"{JS}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS}.CONSUMER.MSG.NEXT.{stream}.{durable}",
    )
    grants.pub(f"acks, naks, in-progress and term of `{durable}`'s messages", f"$JS.ACK.{stream}.{durable}.>")
    grants.pub(f"dead-letters what `{durable}` gave up on (stream DEADLETTER)", dead_letter_subject(durable))


def api() -> Permissions:
    grants = _Grants()
    _service(grants, "api")
    _durable(grants, WEBHOOKS_CONSUMER)  # the webhook sender (vibewave.api.webhooks)
    grants.pub("submits requests and asks for cancels (stream REQUESTS)",
               *_events(RequestEvent.SUBMITTED, RequestEvent.CANCEL_REQUESTED))  # fmt: skip
    grants.pub("reads a request accepted but not yet recorded (its `submitted` event)",
               f"{JS}.STREAM.MSG.GET.{REQUESTS_STREAM.name}", f"{JS}.DIRECT.GET.{REQUESTS_STREAM.name}.>")  # fmt: skip
    grants.sub("shows the progress of running requests", *_events(RequestEvent.PROGRESS))
    grants.pub("calls pod-manager's admin operations (request/reply)", f"{POD_RPC_PREFIX}.*")
    grants.pub("pings the services for /health", *(f"$SRV.PING.{micro_name(s)}" for s in SERVICE_NAMES))
    store = f"OBJ_{OUTPUTS_STORE.name}"
    grants.pub(
        "serves the generated files: an object's info, then an ordered consumer on its chunks (found by subject)",
        f"{JS}.STREAM.INFO.{store}",
        f"{JS}.STREAM.MSG.GET.{store}",
        f"{JS}.DIRECT.GET.{store}.>",
        f"{JS}.STREAM.NAMES",
        f"{JS}.CONSUMER.CREATE.{store}",
        f"$JS.FC.{store}.>",
    )
    grants.pub("stores uploaded input images (POST /api/files; each a new name) beside the outputs",
               f"$O.{OUTPUTS_STORE.name}.>")  # fmt: skip
    return grants.built()


def scheduler() -> Permissions:
    grants = _Grants()
    _service(grants, "scheduler")
    _durable(grants, SCHEDULER_CONSUMER)
    grants.pub("announces placements and the public terminal events (it alone)",
               *_events(RequestEvent.ASSIGNED, *TERMINAL))  # fmt: skip
    grants.pub("hands assignments to the executors (work queue DISPATCH)", f"{DISPATCH_PREFIX}.>")
    grants.pub("tells pod-manager what the queue needs", DEMAND_SUBJECT)
    return grants.built(responses="answers its `$SRV.PING`")


def pod_manager() -> Permissions:
    grants = _Grants()
    _service(grants, "pod-manager")
    _durable(grants, POD_FAULTS_CONSUMER)
    grants.sub("answers the api's admin calls (it alone)", f"{POD_RPC_PREFIX}.*")
    grants.sub("hears what the scheduler's queue needs", DEMAND_SUBJECT)
    grants.pub("announces every change of a pod (stream PODS)", f"{POD_PREFIX}.>")
    grants.pub("counts its replicas (standbys)", f"$SRV.PING.{micro_name('pod-manager')}")
    return grants.built(responses="answers each admin call, and its `$SRV.PING`")


def executor() -> Permissions:
    grants = _Grants()
    _service(grants, "executor")
    _durable(grants, EXECUTOR_CONSUMER)
    grants.pub("reports each attempt to the scheduler (never a terminal event)", *_events(*ATTEMPT_REPORTS))
    grants.sub("hears every cancel; the one running that request stops it", *_events(RequestEvent.CANCEL_REQUESTED))
    store = f"OBJ_{OUTPUTS_STORE.name}"
    grants.pub(
        "stores the generated files: chunks and metadata, the existing object's info, and the purge of "
        "chunks left by a failed or replaced put",
        f"$O.{OUTPUTS_STORE.name}.>",
        f"{JS}.STREAM.INFO.{store}",
        f"{JS}.STREAM.MSG.GET.{store}",
        f"{JS}.DIRECT.GET.{store}.>",
        f"{JS}.STREAM.PURGE.{store}",
    )
    grants.pub("reads uploaded input images to put them on the pod (an ordered consumer on their chunks, "
               "its stream found by subject)", f"{JS}.STREAM.NAMES", f"{JS}.CONSUMER.CREATE.{store}",
               f"$JS.FC.{store}.>")  # fmt: skip
    return grants.built(responses="answers its `$SRV.PING`")


def observer() -> Permissions:
    """For clients that follow what happens to requests and pods: the public channels, read only."""
    grants = _Grants()
    grants.sub("replies to its own requests", "_INBOX.>")
    for channel in CHANNELS:
        if channel.public:
            subject = channel.address
            for parameter in channel.parameters:
                subject = subject.replace("{" + parameter + "}", "*")
            grants.sub(f"the public channel {channel.address} ({channel.description})", subject)
    return grants.built()


def cluster_probe() -> Permissions:
    """`make run-cluster` waits until an R3 stream can be placed, with a probe stream made and deleted."""
    grants = _Grants()
    grants.sub("replies to its own requests", "_INBOX.>")
    grants.pub("asks whether JetStream is up, then places and deletes the probe stream", f"{JS}.INFO",
               f"{JS}.STREAM.CREATE.{CLUSTER_PROBE_STREAM}", f"{JS}.STREAM.DELETE.{CLUSTER_PROBE_STREAM}")  # fmt: skip
    return grants.built()


def roles(*, cluster: bool = False) -> dict[str, Permissions]:
    """Each user's permissions, built from the contract (`cluster`: with the local cluster's probe)."""
    users = {"api": api(), "scheduler": scheduler(), "pod-manager": pod_manager(), "executor": executor(),
             OBSERVER: observer()}  # fmt: skip
    if cluster:
        users[CLUSTER_PROBE] = cluster_probe()
    return users


# ------------------------------------------------------------------------------- the server's config


def password_env(user: str) -> str:
    """The variable a deployment's nats-server reads `user`'s password from (`VIBEWAVE_NATS_PASSWORD_API`)."""
    return PASSWORD_ENV_PREFIX + user.upper().replace("-", "_")


def authorization_block(
    passwords: Mapping[str, str] | None = None, users: Mapping[str, Permissions] | None = None
) -> str:
    """nats-server's `authorization { users = [...] }` for `users` (default: `roles()`). With `passwords`
    they are written in (keep the file private); without, each is a `$VIBEWAVE_NATS_PASSWORD_<USER>`
    reference that nats-server resolves from its environment."""
    entries = []
    for user, permissions in (users if users is not None else roles()).items():
        password = json.dumps(passwords[user]) if passwords is not None else "$" + password_env(user)
        entries.append(
            f"    {{user: {json.dumps(user)}, password: {password},\n"
            f"     permissions: {json.dumps(permissions.as_config())}}}"
        )
    return "authorization {\n  users = [\n" + "\n".join(entries) + "\n  ]\n}\n"


def new_passwords(users: Iterable[str]) -> dict[str, str]:
    return {user: secrets.token_hex(24) for user in users}


def home_passwords(home: Path, users: Iterable[str] = (*USERS, CLUSTER_PROBE)) -> dict[str, str]:
    """The passwords of a devstack home (`<home>/nats-auth/passwords.json`, mode 0600), made on first use
    and kept: a restarted stack, its restarted NATS and `make run-cluster` on the same home agree."""
    path = home / "nats-auth" / "passwords.json"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [user for user in users if user not in known]
    if missing:
        known.update(new_passwords(missing))
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(known, out)
        tmp.replace(path)
    return known


def service_environment(user: str, password: str) -> dict[str, str]:
    """What a service's process gets to connect as `user`: its credentials, and whether it provisions."""
    return {"NATS_USER": user, "NATS_PASSWORD": password, "NATS_PROVISION": "1" if user == PROVISIONER else "0"}


def describe(users: Mapping[str, Permissions] | None = None) -> str:
    """Every user's permissions with the reason for each, one line apiece."""
    lines = []
    for user, permissions in (users if users is not None else roles()).items():
        lines.append(f"{user}:")
        lines += [f"  publish   {rule.subject:<56} {rule.why}" for rule in permissions.publish]
        lines += [f"  subscribe {rule.subject:<56} {rule.why}" for rule in permissions.subscribe]
        if permissions.responses:
            lines.append(f"  responses {'(allow_responses)':<56} {permissions.responses}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m vibewave.devstack.nats_auth`: the authorization block, passwords from the environment."""
    parser = argparse.ArgumentParser(description="Print nats-server's authorization block for Vibewave's users.")
    parser.add_argument("--passwords", type=Path, help="a JSON file {user: password}: write them in instead")
    parser.add_argument("--describe", action="store_true", help="list every permission and why it exists")
    args = parser.parse_args(argv)
    if args.describe:
        print(describe())
    else:
        sys.stdout.write(authorization_block(json.loads(args.passwords.read_text()) if args.passwords else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
