"""``sluice dev fleet``'s pure parts: which namespace the manifests go to, the injector's
environment for a sidecar, the downward-API labels file, and the call counter's routes.
(The command itself runs in ``tests/cluster/test_dev_fleet.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice_cli import cpcount, devfleet
from sluice_sidecar import podinfo
from sluice_sidecar.controlplane_client import Identity

ROUTE = """\
apiVersion: sluice.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat%s}
spec: {backends: [{name: m, provider: mock, model: m}]}
"""


def write(tmp_path: Path, name: str, namespace: str | None) -> Path:
    path = tmp_path / name
    path.write_text(ROUTE % (f", namespace: {namespace}" if namespace else ""))
    return path


def test_the_namespace_is_the_flag_else_the_manifests_else_default(tmp_path: Path) -> None:
    plain = write(tmp_path, "a.yaml", None)
    docs, ns = devfleet.load_manifests([plain], None)
    assert ns == "default" and docs[0]["metadata"]["namespace"] == "default"
    docs, ns = devfleet.load_manifests([plain], "shop")
    assert ns == "shop" and docs[0]["metadata"] == {"name": "chat", "namespace": "shop"}
    named = write(tmp_path, "b.yaml", "shop")
    assert devfleet.load_manifests([named], None)[1] == "shop"
    with pytest.raises(devfleet.FleetError, match=r"not 'other'.*--namespace shop"):
        devfleet.load_manifests([named], "other")
    with pytest.raises(devfleet.FleetError, match=r"several namespaces.*pass --namespace"):
        devfleet.load_manifests([named, write(tmp_path, "c.yaml", "else")], None)


def test_invalid_manifests_are_one_line_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROUTE % "").replace("provider: mock", "provider: nosuch"))
    with pytest.raises(devfleet.FleetError) as err:
        devfleet.load_manifests([bad, tmp_path / "absent.yaml"], None)
    assert "absent.yaml: no such file or directory" in str(err.value)
    with pytest.raises(devfleet.FleetError) as err:
        devfleet.load_manifests([bad], None)
    assert "spec.backends[0].provider" in str(err.value) and "\n" not in str(err.value)


def test_the_sidecar_env_is_what_the_injected_sidecar_reads(tmp_path: Path) -> None:
    token, labels = tmp_path / "token", tmp_path / "labels"
    env = devfleet.sidecar_env(
        {"PATH": "/bin"},
        control_plane="https://127.0.0.1:9443",
        ca_pem=None,
        namespace="shop",
        pod="fleet-0",
        uid="u-1",
        service_account="fleet",
        token_file=token,
        labels_file=labels,
        report_interval=2,
    )
    assert env == {
        "PATH": "/bin",
        "POD_NAME": "fleet-0",
        "POD_NAMESPACE": "shop",
        "POD_UID": "u-1",
        "POD_SERVICE_ACCOUNT": "fleet",
        "SLUICE_TOKEN_FILE": str(token),
        "SLUICE_POD_LABELS_FILE": str(labels),
        "SLUICE_CONTROL_PLANE_URL": "https://127.0.0.1:9443",
        "SLUICE_REPORT_INTERVAL": "2",
    }
    identity = Identity.from_env(env)
    assert identity is not None
    assert (identity.namespace, identity.pod, identity.report_interval) == ("shop", "fleet-0", 2)
    plain = devfleet.sidecar_env(
        {},
        control_plane="http://127.0.0.1:1",
        ca_pem=None,
        namespace="n",
        pod="p",
        token_file=token,
    )
    assert plain["SLUICE_CONTROL_PLANE_INSECURE"] == "true" and "POD_UID" not in plain


def test_child_env_drops_in_cluster_hints_and_identities() -> None:
    got = devfleet.child_env(
        {
            "PATH": "/bin",
            "KUBERNETES_SERVICE_HOST": "10.0.0.1",
            "POD_NAME": "me",
            "SLUICE_CONTROL_PLANE_URL": "https://x",
            "SLUICE_TOKEN_FILE": "/t",
            "SLUICE_LEASE_TTL": "5",
        }
    )
    assert got == {"PATH": "/bin", "SLUICE_LEASE_TTL": "5"}


def test_the_labels_file_reads_back_as_the_pod_labels(tmp_path: Path) -> None:
    labels = {"sluice.dev/injected": "true", "team": 'a "quoted" one'}
    path = tmp_path / "labels"
    path.write_text(devfleet.labels_text(labels))
    assert podinfo.pod_labels({podinfo.ENV: str(path)}) == labels


def test_the_counter_names_routes_without_namespaces() -> None:
    assert cpcount.route_of("GET", "/v1/config/shop") == "GET /v1/config/{ns}"
    assert cpcount.route_of("POST", "/v1/leases") == "POST /v1/leases"
    assert cpcount.route_of("GET", "/v1/config/a/b") == "GET /v1/config/a/b"
