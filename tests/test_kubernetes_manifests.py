"""The Kubernetes manifests in deploy/kubernetes, rendered with kustomize.

Every rendered resource is validated offline against the Kubernetes JSON
schemas bundled in the ``kubernetes-validate`` package, in strict mode so an
unknown or misspelled field fails. The relay configuration in each
ConfigMap is validated by the relay itself, with the files and environment
variables the pod would give it.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from relay.config import parse_config
from relay.errors import ConfigError
from tests.kafka_tls import make_test_pki

REPO = Path(__file__).resolve().parent.parent
KUSTOMIZE_ROOT = REPO / "deploy" / "kubernetes"
VARIANTS = ["base", "overlays/kafka-sasl-ssl", "overlays/spool"]
# The oldest Kubernetes release the manifests target, and the newest one with bundled schemas.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
SHUTDOWN_MARGIN_S = 5
PLACEHOLDER_SECRET = "placeholder-secret-value"


def kustomize_command() -> list[str]:
    """Return the command that renders a kustomization: kustomize, else kubectl's built-in one."""
    tools_bin = Path(os.environ.get("RELAY_TOOLS_BIN", Path.home() / ".cache/tasknation-relay/bin"))
    kustomize = shutil.which("kustomize") or shutil.which("kustomize", path=str(tools_bin))
    if kustomize:
        return [kustomize, "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    pytest.fail(
        "neither kustomize nor kubectl is installed; ./scripts/test installs kustomize with "
        "`go install sigs.k8s.io/kustomize/kustomize/v5` when Go is available"
    )


def render(variant: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [*kustomize_command(), str(KUSTOMIZE_ROOT / variant)],
        check=True,
        capture_output=True,
        text=True,
    )
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module", params=VARIANTS)
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def only(documents: list[dict[str, Any]], *kinds: str) -> dict[str, Any]:
    found = [document for document in documents if document["kind"] in kinds]
    assert len(found) == 1, f"expected one of {kinds}, found {len(found)}"
    return found[0]


def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    return None


def pod_spec(documents: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = only(documents, *WORKLOAD_KINDS)["spec"]["template"]["spec"]
    return spec


def relay_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(documents)["containers"]
    assert [container["name"] for container in containers] == ["relay"]
    container: dict[str, Any] = containers[0]
    return container


def relay_yaml(documents: list[dict[str, Any]]) -> dict[str, Any]:
    text = only(documents, "ConfigMap")["data"]["relay.yaml"]
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_schemas(manifests, version) -> None:
    for document in manifests:
        kubernetes_validate.validate(document, version, strict=True)


def test_schema_check_rejects_unknown_field() -> None:
    deployment = only(render("base"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}

    with pytest.raises(kubernetes_validate.ValidationError, match="livenessprobe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_pods_run_locked_down(manifests) -> None:
    spec = pod_spec(manifests)
    container = relay_container(manifests)

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}


def test_probes_use_health_endpoints(manifests) -> None:
    container = relay_container(manifests)
    port_names = {port["name"] for port in container["ports"]}

    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert "http" in port_names


def test_grace_period_covers_shutdown(manifests) -> None:
    # The relay waits up to shutdown_grace_s for requests in flight, then up
    # to shutdown_grace_s again for the producer to flush. The preStop sleep
    # runs before both and counts against the same grace period.
    shutdown_grace_s = relay_yaml(manifests)["server"]["shutdown_grace_s"]
    pre_stop = relay_container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"

    needed_s = int(pre_stop[1]) + 2 * shutdown_grace_s + SHUTDOWN_MARGIN_S

    assert pod_spec(manifests)["terminationGracePeriodSeconds"] >= needed_s


def test_selectors_match_pods(manifests) -> None:
    workload = only(manifests, *WORKLOAD_KINDS)
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    selector = workload["spec"]["selector"]["matchLabels"]
    services = [document for document in manifests if document["kind"] == "Service"]
    budget = only(manifests, "PodDisruptionBudget")

    assert selector
    assert selector.items() <= pod_labels.items()
    assert budget["spec"]["selector"]["matchLabels"] == selector
    for service in services:
        assert service["spec"]["selector"] == selector


def test_autoscaler_targets_deployment() -> None:
    documents = render("base")
    target = only(documents, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]

    assert find(documents, target["kind"], target["name"]) is not None
    assert target["kind"] == "Deployment"


def test_spool_variant_uses_statefulset() -> None:
    documents = render("overlays/spool")
    statefulset = only(documents, "StatefulSet")
    claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {
        mount["name"]: mount["mountPath"] for mount in relay_container(documents)["volumeMounts"]
    }
    spool_path = relay_yaml(documents)["spool"]["path"]

    assert [document["kind"] for document in documents].count("Deployment") == 0
    assert find(documents, "HorizontalPodAutoscaler", "tasknation-relay") is None
    assert claims == {"spool"}
    assert spool_path.startswith(mounts["spool"] + "/")
    assert find(documents, "Service", statefulset["spec"]["serviceName"]) is not None


def test_config_valid_inside_pod(manifests, tmp_path, monkeypatch) -> None:
    document = relay_yaml(manifests)
    # NOTE: the spool section is checked by test_spool_variant_uses_statefulset
    # only; the relay validates it once the disk spool is part of the config.
    document.pop("spool", None)
    for name, value in pod_environment(manifests).items():
        monkeypatch.setenv(name, value)
    pod_files = PodFiles(manifests, tmp_path)

    config = parse_config(yaml.safe_dump(pod_files.relocate(document)))

    assert config.sources[0].secret_bytes() == (PLACEHOLDER_SECRET.encode(),)
    assert pod_files.missing == []


def test_empty_webhook_secret_stops_relay(tmp_path) -> None:
    documents = render("base")
    pod_files = PodFiles(documents, tmp_path, fill_empty=False)

    with pytest.raises(ConfigError, match="every webhook secret is empty"):
        parse_config(yaml.safe_dump(pod_files.relocate(relay_yaml(documents))))


def pod_environment(documents: list[dict[str, Any]]) -> dict[str, str]:
    """Return the relay container's environment, with Secret values read from the manifests."""
    environment = {}
    for variable in relay_container(documents).get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]["secretKeyRef"]
        secret = find(documents, "Secret", reference["name"])
        assert secret is not None, f"Secret {reference['name']} is not in the manifests"
        value = base64.b64decode(secret["data"][reference["key"]]).decode()
        environment[variable["name"]] = value or PLACEHOLDER_SECRET
    return environment


class PodFiles:
    """Writes the files that the pod's volumes would mount into a temporary folder.

    ``relocate`` rewrites every file path in a relay configuration to its
    copy there; ``missing`` lists paths that no volume mount provides.
    """

    def __init__(
        self, documents: list[dict[str, Any]], root: Path, *, fill_empty: bool = True
    ) -> None:
        self._documents = documents
        self._root = root
        self._fill_empty = fill_empty
        volumes = {volume["name"]: volume for volume in pod_spec(documents)["volumes"]}
        # Mounts of a StatefulSet's volume claims hold no configured files.
        self._mounts = {
            mount["mountPath"]: volumes[mount["name"]]
            for mount in relay_container(documents)["volumeMounts"]
            if mount["name"] in volumes
        }
        self.missing: list[str] = []

    def relocate(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            if set(value) == {"file"}:
                return {"file": self._write(value["file"])}
            return {name: self.relocate(item, name) for name, item in value.items()}
        if isinstance(value, list):
            return [self.relocate(item) for item in value]
        if key.endswith("_file") and isinstance(value, str):
            return self._write(value)
        return value

    def _write(self, path: str) -> str:
        for mount_path, volume in self._mounts.items():
            if path.startswith(mount_path + "/"):
                content = self._volume_file(volume, path.removeprefix(mount_path + "/"))
                target = self._root / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                return str(target)
        self.missing.append(path)
        return path

    def _volume_file(self, volume: dict[str, Any], name: str) -> bytes:
        if "configMap" in volume:
            config_map = find(self._documents, "ConfigMap", volume["configMap"]["name"])
            assert config_map is not None, f"ConfigMap {volume['configMap']['name']} is missing"
            return str(config_map["data"][name]).encode()

        secret_name = volume["secret"]["secretName"]
        secret = find(self._documents, "Secret", secret_name)
        if secret is None:
            # A Secret that the cluster provides, such as the Kafka CA: stand in a real CA.
            assert name.endswith(".crt"), f"{name} from Secret {secret_name} is not a certificate"
            return make_test_pki(self._root / "pki").ca_file.read_bytes()
        assert name in secret["data"], f"Secret {secret_name} has no key {name}"
        content = base64.b64decode(secret["data"][name])
        if not content and self._fill_empty:
            return PLACEHOLDER_SECRET.encode()
        return content
