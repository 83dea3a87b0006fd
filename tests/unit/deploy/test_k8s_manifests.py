"""The Kubernetes manifests (deploy/k8s) as kustomize builds them: valid against the Kubernetes API schemas
offline, every Deployment probed, bounded and unprivileged, each secret only where the devstack lets it go
(the RunPod key in pod-manager alone), every variable one its service reads, and NATS from the official
chart with the users and permissions of `nats_auth`.

Each check runs on two renderings: the kustomization resolved here (its resources, its Secrets generated
from the `secrets/*.env.example` files, namespace and image applied) and, where kubectl is installed,
`kubectl kustomize` itself (which also hashes the Secrets' names and rewrites every reference to them).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from vibewave.devstack import nats_auth, supervisor
from vibewave.devstack.nats_server import nats_server_binary
from vibewave.runtime.pod_token import POD_TOKEN_KEY_ENV
from vibewave.runtime.process import STOP_TIMEOUT

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
NATS_VALUES = K8S / "nats" / "values.yaml"
NATS_RELEASE = "nats"  # the README's `helm install nats …`: the chart's fullname, so its client Service's name
NATS_USERS_SECRET = "vibewave-nats-users"  # named in nats/values.yaml, so generated without a hash suffix
# The oldest Kubernetes we support and the newest kubernetes-validate knows (catches removed API versions too)
KUBE_VERSIONS = ("1.31", kubernetes_validate.utils.latest_version())
IMAGE = "vibewave"
UID = 10001
HOME_PATH = "/var/lib/vibewave"
SERVICES = ("api", "scheduler", "pod-manager", "executor")
LEASED = ("scheduler", "pod-manager")  # one leader, the other replica stands by
SCALED = ("api", "executor")  # replicas share the work: PodDisruptionBudget and HorizontalPodAutoscaler
# Read by botocore (the S3 store's client), not by our code; the devstack hands them to the same services
READ_BY_LIBRARIES = set(supervisor.STORAGE_CREDENTIALS)
# Who may hold each secret, as the devstack hands them out (supervisor.child_environments)
SECRET_HOLDERS: dict[str, tuple[str, ...]] = {
    **{name: ("pod-manager",) for name in supervisor.POD_MANAGER_ONLY},
    **{name: ("api",) for name in supervisor.API_ONLY},
    POD_TOKEN_KEY_ENV: supervisor.POD_TOKEN_HOLDERS,
    **{name: supervisor.STORAGE_HOLDERS for name in supervisor.STORAGE_CREDENTIALS},
}
NAMESPACED_KINDS = {"ServiceAccount", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
                    "HorizontalPodAutoscaler"}  # fmt: skip

Doc = dict[str, Any]


def source_dir(service: str) -> Path:
    return REPO / "services" / service / "src"


def module(service: str) -> str:
    return f"vibewave.{service.replace('-', '_')}"


# ------------------------------------------------------------------------------------------ renderings


def read_env_file(path: Path) -> dict[str, str]:
    """A kustomize `envs` file: KEY=VALUE lines, `#` comments."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def resolve_here(root: Path) -> list[Doc]:
    """The kustomization as kustomize would build it, for what these checks look at."""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    docs: list[Doc] = []
    for resource in kustomization["resources"]:
        docs += [doc for doc in yaml.safe_load_all((root / resource).read_text()) if doc]
    for generator in kustomization.get("secretGenerator", []):
        data: dict[str, str] = {}
        for env in generator.get("envs", []):
            data |= read_env_file(root / f"{env}.example")
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]},
                     "type": "Opaque", "data": encoded})  # fmt: skip
    images = {image["name"]: image for image in kustomization.get("images", [])}
    for doc in docs:
        if doc["kind"] in NAMESPACED_KINDS:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                image = images.get(container["image"].split(":")[0])
                if image is not None:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return docs


def build_with_kubectl(kubectl: str, work: Path) -> list[Doc]:
    """`kubectl kustomize` of a copy of deploy/k8s whose secret files are the examples."""
    root = work / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("*.env"))
    for example in (root / "secrets").glob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    built = subprocess.run([kubectl, "kustomize", str(root)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, f"kubectl kustomize failed: {built.stderr}"
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@pytest.fixture(scope="module", params=["resolved", "kubectl"])
def docs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    if request.param == "resolved":
        return resolve_here(K8S)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomization resolved here is checked instead")
    return build_with_kubectl(kubectl, tmp_path_factory.mktemp("kustomize"))


@pytest.fixture(scope="module")
def values() -> Doc:
    loaded: Doc = yaml.safe_load(NATS_VALUES.read_text())
    return loaded


# --------------------------------------------------------------------------------------------- lookups


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def deployments(docs: list[Doc]) -> dict[str, Doc]:
    return of_kind(docs, "Deployment")


def pod_spec(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def pod_labels(deployment: Doc) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def the_container(deployment: Doc) -> Doc:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container expected"
    container: Doc = containers[0]
    return container


def containers(spec: Doc) -> Iterator[Doc]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(field, [])


def env_of(container: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def config_of(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The ConfigMap keys a container gets through envFrom."""
    maps = of_kind(docs, "ConfigMap")
    keys: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            keys |= maps[source["configMapRef"]["name"]].get("data", {})
    return keys


def setting(docs: list[Doc], container: Doc, name: str) -> str | None:
    """A plain (non-secret) setting's value as the container sees it: its env over its ConfigMaps."""
    entry = env_of(container).get(name)
    if entry is not None:
        value: str | None = entry.get("value")
        return value
    return config_of(docs, container).get(name)


def secret_references(spec: Doc) -> set[tuple[str, str | None]]:
    """Every (Secret, key) a pod spec names — env, envFrom, volumes, projected volumes; key None for a whole Secret."""
    refs: set[tuple[str, str | None]] = set()
    for container in containers(spec):
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                refs.add((ref["name"], ref["key"]))
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                refs.add((source["secretRef"]["name"], None))
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            refs.add((volume["secret"]["secretName"], None))
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                refs.add((source["secret"]["name"], None))
    return refs


def secrets_holding(docs: list[Doc], key: str) -> set[str]:
    return {name for name, secret in of_kind(docs, "Secret").items() if key in secret.get("data", {})}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def container_port(container: Doc, port: int | str) -> int:
    """A probe's or a Service's port, resolved when it names one of the container's ports."""
    if isinstance(port, int):
        return port
    named = {entry.get("name"): entry["containerPort"] for entry in container.get("ports", [])}
    assert port in named, f"port {port!r} is not one of the container's ports {sorted(named)}"
    number: int = named[port]
    return number


def service_port(docs: list[Doc], service: str) -> int:
    """Where a service serves /metrics and its probes: the api on API_PORT, the others on OPS_PORT."""
    container = the_container(deployments(docs)[service])
    value = setting(docs, container, "API_PORT" if service == "api" else "OPS_PORT")
    assert value, f"{service}: {'API_PORT' if service == 'api' else 'OPS_PORT'} is not set"
    return int(value)


# ------------------------------------------------------------------------------------ the whole build


def test_every_document_is_valid_for_the_kubernetes_api(docs: list[Doc]) -> None:
    """Strict: an unknown or misspelt field fails too, not only a wrong type."""
    assert {doc["kind"] for doc in docs} >= {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "Deployment",
                                             "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}  # fmt: skip
    for doc in docs:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {exc.message}")


def test_everything_is_in_the_namespace(docs: list[Doc]) -> None:
    namespace = of_kind(docs, "Namespace")
    assert list(namespace) == ["vibewave"]
    for doc in docs:
        if doc["kind"] in NAMESPACED_KINDS:
            assert doc["metadata"].get("namespace") == "vibewave", f"{doc['kind']} {doc['metadata']['name']}"


def test_one_deployment_per_service_running_its_module_of_the_one_image(docs: list[Doc]) -> None:
    found = deployments(docs)
    assert sorted(found) == sorted(SERVICES)
    for service, deployment in found.items():
        container = the_container(deployment)
        assert container["image"].split(":")[0] == IMAGE, service
        assert container["command"] == ["python", "-m", module(service)], service
        assert importlib.util.find_spec(f"{module(service)}.__main__") is not None, f"{module(service)} has no __main__"
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment)), service


def test_replicas_and_rollouts_that_keep_a_standby(docs: list[Doc]) -> None:
    """Two of each; a rollout starts the new replica before an old one stops, so a leased service always has
    its standby (pod-manager: the one that keeps the GPU pods running across the rollout)."""
    scalers = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(docs, "HorizontalPodAutoscaler").values()}
    for service, deployment in deployments(docs).items():
        if service in SCALED:  # the autoscaler owns the count: a fixed one would be reset by every apply
            assert "replicas" not in deployment["spec"], service
            assert scalers[service]["spec"]["minReplicas"] >= 2, service
        else:
            assert deployment["spec"]["replicas"] >= 2, service
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate", service
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, service


# ----------------------------------------------------------------------------------- each Deployment


def test_probes_on_the_service_port(docs: list[Doc]) -> None:
    for service, deployment in deployments(docs).items():
        container = the_container(deployment)
        port = service_port(docs, service)
        assert port in {entry["containerPort"] for entry in container.get("ports", [])}, service
        for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
            get = container.get(probe, {}).get("httpGet")
            assert get is not None, f"{service}: no {probe}"
            assert get["path"] == path, f"{service}: {probe} on {get['path']}"
            assert container_port(container, get["port"]) == port, f"{service}: {probe} on another port"
        startup = container.get("startupProbe")
        if startup is not None:  # it must not ask for more than liveness does
            assert startup["httpGet"]["path"] == "/health/live", service
        host = setting(docs, container, "API_HOST" if service == "api" else "OPS_HOST")
        assert host == "0.0.0.0", f"{service}: the kubelet and Prometheus reach it only on the pod's address"


def test_prometheus_scrapes_the_port_that_serves_metrics(docs: list[Doc]) -> None:
    for service, deployment in deployments(docs).items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", service
        assert annotations.get("prometheus.io/path") == "/metrics", service
        assert annotations.get("prometheus.io/port") == str(service_port(docs, service)), service


def test_resources_are_bounded(docs: list[Doc]) -> None:
    for service, deployment in deployments(docs).items():
        resources = the_container(deployment).get("resources", {})
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resources.get(bound, {}).get(resource), f"{service}: no {bound}.{resource}"


def test_unprivileged_with_a_read_only_root(docs: list[Doc]) -> None:
    for service, deployment in deployments(docs).items():
        spec = pod_spec(deployment)
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, service
        assert pod.get("runAsUser") == UID, service
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", service
        container = the_container(deployment).get("securityContext", {})
        assert container.get("allowPrivilegeEscalation") is False, service
        assert container.get("readOnlyRootFilesystem") is True, service
        assert container.get("capabilities", {}).get("drop") == ["ALL"], service
        assert container.get("capabilities", {}).get("add") in (None, []), service
        assert container.get("privileged") in (None, False), service
        assert not [volume for volume in spec.get("volumes", []) if "hostPath" in volume], service
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), service


def test_the_home_is_writable(docs: list[Doc]) -> None:
    """VIBEWAVE_HOME (log files) sits on an emptyDir, since the root filesystem is read-only."""
    for service, deployment in deployments(docs).items():
        container = the_container(deployment)
        home = setting(docs, container, "VIBEWAVE_HOME")
        assert home == HOME_PATH, service
        volumes = {volume["name"]: volume for volume in pod_spec(deployment).get("volumes", [])}
        mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
        assert home in mounts, f"{service}: nothing mounted at {home}"
        assert "emptyDir" in volumes[mounts[home]], service


def test_no_kubernetes_api_token_and_no_service_links(docs: list[Doc]) -> None:
    """No service talks to the Kubernetes API; and no `<SERVICE>_PORT=tcp://…` variable may shadow ours
    (a Service named `api` would set API_PORT)."""
    accounts = of_kind(docs, "ServiceAccount")
    for service, deployment in deployments(docs).items():
        spec = pod_spec(deployment)
        assert spec.get("automountServiceAccountToken") is False, service
        assert spec.get("enableServiceLinks") is False, service
        account = accounts.get(spec.get("serviceAccountName", ""))
        assert account is not None, f"{service}: its ServiceAccount is not in the manifests"
        assert account.get("automountServiceAccountToken") is False, service
    names = [pod_spec(deployment)["serviceAccountName"] for deployment in deployments(docs).values()]
    assert len(set(names)) == len(names), "each service has its own ServiceAccount"


def test_termination_grace_outlasts_the_services_stop(docs: list[Doc]) -> None:
    """A service stops within STOP_TIMEOUT (runtime.process); pod-manager retires its pods in that time,
    which the devstack gives 15 s. Kubernetes' SIGKILL must come later, after any preStop pause too."""
    for service, deployment in deployments(docs).items():
        spec = pod_spec(deployment)
        bound = max(STOP_TIMEOUT, supervisor.STOP_BOUNDS.get(service, supervisor.STOP_BOUND))
        pause = the_container(deployment).get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        assert grace > bound + pause, f"{service}: {grace}s of grace for a {pause}s pause and a {bound}s stop"


def test_every_variable_set_is_one_the_service_reads(docs: list[Doc]) -> None:
    """A typo in a variable's name (MAX_POD for MAX_PODS) would be silently ignored: every name the
    manifests give a service must be read, quoted, in its own package or the shared runtime."""
    runtime = "".join(path.read_text() for path in (REPO / "runtime" / "src").rglob("*.py"))
    for service, deployment in deployments(docs).items():
        container = the_container(deployment)
        names = set(env_of(container)) | set(config_of(docs, container))
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                secret = of_kind(docs, "Secret")[source["secretRef"]["name"]]
                names |= set(secret.get("data", {}))
        code = runtime + "".join(path.read_text() for path in source_dir(service).rglob("*.py"))
        unread = sorted(name for name in names - READ_BY_LIBRARIES if not re.search(rf"[\"']{name}[\"']", code))
        assert not unread, f"{service} is given variables it never reads: {unread}"


# ------------------------------------------------------------------------------------------- secrets


def test_the_runpod_key_reaches_pod_manager_only(docs: list[Doc]) -> None:
    """Its Secret is named by pod-manager's Deployment and by no other, in any way (env, envFrom, volumes)."""
    holding = secrets_holding(docs, "RUNPOD_API_KEY")
    assert holding, "no Secret holds RUNPOD_API_KEY"
    users = {service for service, deployment in deployments(docs).items()
             if {name for name, _ in secret_references(pod_spec(deployment))} & holding}  # fmt: skip
    assert users == {"pod-manager"}
    env = env_of(the_container(deployments(docs)["pod-manager"]))
    assert env["RUNPOD_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] in holding
    given = {
        service
        for service, deployment in deployments(docs).items()
        if "RUNPOD_API_KEY" in env_of(the_container(deployment))
    }
    assert given == {"pod-manager"}


def test_each_secret_only_where_the_devstack_gives_it(docs: list[Doc]) -> None:
    """The devstack's rules (supervisor.child_environments): the api's keys to the api, the pod token key
    to pod-manager and the executor, storage credentials to the api and the executor; always from a
    Secret, never a literal value; and no Secret handed over whole."""
    for key, holders in SECRET_HOLDERS.items():
        holding = secrets_holding(docs, key)
        for service, deployment in deployments(docs).items():
            if service in holders:
                continue
            names = {name for name, _ in secret_references(pod_spec(deployment))}
            assert not names & holding, f"{service} names the Secret holding {key}"
            assert key not in env_of(the_container(deployment)), f"{service} is given {key}"
    for service, deployment in deployments(docs).items():
        refs = secret_references(pod_spec(deployment))
        assert all(key is not None for _, key in refs), f"{service} gets a whole Secret: name its keys"
        for name, entry in env_of(the_container(deployment)).items():
            if name in supervisor.SECRETS and name not in ("NATS_USER", "NATS_PROVISION"):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{service}: {name} is not from a Secret"


def test_each_service_connects_to_nats_as_its_own_user(docs: list[Doc]) -> None:
    """NATS_USER its own, NATS_PASSWORD its own key of the users' Secret (no other's), and only the
    scheduler provisions — as `nats_auth.service_environment` says."""
    users_secret = of_kind(docs, "Secret").get(NATS_USERS_SECRET)
    assert users_secret is not None, f"the Secret {NATS_USERS_SECRET} (named by nats/values.yaml) is missing"
    assert set(users_secret["data"]) == set(nats_auth.USERS)
    for service, deployment in deployments(docs).items():
        env = env_of(the_container(deployment))
        expected = nats_auth.service_environment(service, "")
        assert env["NATS_USER"].get("value") == expected["NATS_USER"], service
        assert env["NATS_PROVISION"].get("value") == expected["NATS_PROVISION"], service
        password = env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (password["name"], password["key"]) == (NATS_USERS_SECRET, service), service
        others = {(name, key) for name, key in secret_references(pod_spec(deployment)) if name == NATS_USERS_SECRET}
        assert others == {(NATS_USERS_SECRET, service)}, f"{service} names another user's password"


# ------------------------------------------------------------------------ Service, PDB and autoscaling


def test_the_api_service_selects_the_api_pods(docs: list[Doc]) -> None:
    service = of_kind(docs, "Service")["api"]
    selector = service["spec"]["selector"]
    found = deployments(docs)
    assert [name for name, deployment in found.items() if selects(selector, pod_labels(deployment))] == ["api"]
    container = the_container(found["api"])
    for port in service["spec"]["ports"]:
        assert container_port(container, port["targetPort"]) == service_port(docs, "api")


def min_replicas(docs: list[Doc], deployment: str) -> int:
    """The fewest replicas the autoscaler of `deployment` keeps."""
    for scaler in of_kind(docs, "HorizontalPodAutoscaler").values():
        if scaler["spec"]["scaleTargetRef"]["name"] == deployment:
            return int(scaler["spec"]["minReplicas"])
    raise AssertionError(f"{deployment} has neither replicas nor an autoscaler")


def test_disruption_budgets_and_autoscalers_fit_their_deployments(docs: list[Doc]) -> None:
    found = deployments(docs)
    budgets = of_kind(docs, "PodDisruptionBudget")
    scalers = of_kind(docs, "HorizontalPodAutoscaler")
    for budget in budgets.values():
        assert budget["apiVersion"] == "policy/v1"
        covered = [name for name, deployment in found.items()
                   if selects(budget["spec"]["selector"]["matchLabels"], pod_labels(deployment))]  # fmt: skip
        assert len(covered) == 1, f"PodDisruptionBudget {budget['metadata']['name']} selects {covered}"
        spec = budget["spec"]
        fewest = found[covered[0]]["spec"].get("replicas") or min_replicas(docs, covered[0])
        assert spec.get("minAvailable", 0) < fewest or spec.get("maxUnavailable")
    by_deployment = {
        name: [b for b in budgets.values() if selects(b["spec"]["selector"]["matchLabels"], pod_labels(found[name]))]
        for name in found
    }
    for service in SCALED:
        assert by_deployment[service], f"no PodDisruptionBudget for {service}"
        targets = [s for s in scalers.values() if s["spec"]["scaleTargetRef"]["name"] == service]
        assert len(targets) == 1, f"one HorizontalPodAutoscaler for {service}, found {len(targets)}"
        scaler = targets[0]
        assert scaler["apiVersion"] == "autoscaling/v2"
        assert scaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
        assert 2 <= scaler["spec"]["minReplicas"] < scaler["spec"]["maxReplicas"]
        metrics = [m["resource"]["name"] for m in scaler["spec"]["metrics"] if m["type"] == "Resource"]
        assert "cpu" in metrics, service
        assert the_container(found[service])["resources"]["requests"]["cpu"], f"{service}: CPU use needs a request"
    for name in scalers:
        assert scalers[name]["spec"]["scaleTargetRef"]["name"] in SCALED, "a leased service has one leader: no HPA"


# ---------------------------------------------------------------------------------------------- NATS


def test_services_use_the_charts_client_service(docs: list[Doc], values: Doc) -> None:
    port = values.get("config", {}).get("nats", {}).get("port", 4222)
    namespace = next(iter(of_kind(docs, "Namespace")))
    for service, deployment in deployments(docs).items():
        container = the_container(deployment)
        assert setting(docs, container, "NATS_URL") == f"nats://{NATS_RELEASE}.{namespace}.svc:{port}", service
        replicas = setting(docs, container, "NATS_REPLICAS")
        assert replicas == str(values["config"]["cluster"]["replicas"]), service


def test_nats_is_a_three_node_jetstream_cluster_on_volumes(values: Doc) -> None:
    config = values["config"]
    assert config["cluster"]["enabled"] is True
    assert config["cluster"]["replicas"] == 3
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert not jetstream.get("memoryStore", {}).get("enabled")


def test_nats_auth_block_is_what_nats_auth_generates(values: Doc) -> None:
    """Permissions follow the contract: a change there must reach the chart's values (paste the output of
    `python -m vibewave.devstack.nats_auth` as auth.conf in deploy/k8s/nats/values.yaml)."""
    assert values["config"]["merge"] == {"$include": "./auth.conf"}
    assert values["configMap"]["merge"]["data"]["auth.conf"] == nats_auth.authorization_block()


def test_nats_reads_every_password_from_the_users_secret(values: Doc) -> None:
    env = values["container"]["env"]
    expected = {nats_auth.password_env(user): {"valueFrom": {"secretKeyRef": {"name": NATS_USERS_SECRET, "key": user}}}
                for user in nats_auth.USERS}  # fmt: skip
    assert {name: env.get(name) for name in expected} == expected
    assert not [name for name in env if name.startswith(nats_auth.PASSWORD_ENV_PREFIX) and name not in expected]


def chart_config(values: Doc) -> str:
    """nats.conf as the chart writes it (`nats.formatConfig`): JSON of the config, `<< x >>` unquoted and a
    `$include` key turned into an include directive; here with only what the auth block depends on."""
    document = {"port": 4222, "server_name": "<< $SERVER_NAME >>", **values["config"]["merge"]}
    text = json.dumps(document, indent=2, sort_keys=True)
    text = re.sub(r'".*\$include": "(.*)",?', r"include \1;", text)
    return re.sub(r'"<<\s+(.*?)\s+>>"', r"\1", text)


def test_nats_server_accepts_the_auth_block_with_the_charts_environment(values: Doc, tmp_path: Path) -> None:
    """nats-server itself parses the config with auth.conf included and each password resolved from the
    variables container.env sets — a variable the block names but the chart does not set fails here."""
    (tmp_path / "nats.conf").write_text(chart_config(values))
    (tmp_path / "auth.conf").write_text(values["configMap"]["merge"]["data"]["auth.conf"])
    env = {"PATH": "/usr/bin:/bin", "SERVER_NAME": "nats-0"}
    env |= {name: f"p{index}secret" for index, name in enumerate(values["container"]["env"])}
    checked = subprocess.run([nats_server_binary(), "-t", "-c", str(tmp_path / "nats.conf")],
                             capture_output=True, text=True, timeout=30, env=env)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
