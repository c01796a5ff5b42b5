"""Self-tests of the envtest-style harness: versions, PKI, RBAC with ServiceAccount tokens, a
tiny CRD of our own (structural schema, CEL, status subresource), webhook certs, and teardown."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from sluice_cli import devcluster
from sluice_cli.devcluster import Cluster

from .conftest import Kubectl, wait_established

pytestmark = pytest.mark.cluster

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.sluice.dev"},
    "spec": {
        "group": "harness.sluice.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {
                                        "type": "integer",
                                        "minimum": 1,
                                        "description": "How big the widget is.",
                                    },
                                    "frozen": {
                                        "type": "string",
                                        "x-kubernetes-validations": [
                                            {
                                                "rule": "self == oldSelf",
                                                "message": "frozen is immutable",
                                            }
                                        ],
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, namespace: str, size: int, frozen: str = "a") -> str:
    return json.dumps(
        {
            "apiVersion": "harness.sluice.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"size": size, "frozen": frozen},
        }
    )


@pytest.fixture(scope="module")
def widget_crd(cluster: Cluster) -> str:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    wait_established(cluster, ["widgets.harness.sluice.dev"])
    return "widgets.harness.sluice.dev"


def test_versions_are_the_pinned_ones(cluster: Cluster, kubectl: Kubectl) -> None:
    pinned = devcluster.read_versions()["KUBERNETES_VERSION"]
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["clientVersion"]["gitVersion"] == pinned
    assert version["serverVersion"]["gitVersion"] == pinned
    etcd = subprocess.run(
        [str(cluster.tools.etcd), "--version"], capture_output=True, text=True, check=True
    )
    assert devcluster.read_versions()["ETCD_VERSION"].lstrip("v") in etcd.stdout
    helm = subprocess.run(
        [str(cluster.tools.helm), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert helm.stdout.startswith(devcluster.read_versions()["HELM_VERSION"])


def test_control_plane_basics(cluster: Cluster, kubectl: Kubectl) -> None:
    names = kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert {"namespace/default", "namespace/kube-system", "namespace/kube-public"} <= set(names)
    assert kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"
    # The apiserver's serving cert validates against our CA for 127.0.0.1.
    ctx = ssl.create_default_context(cafile=str(cluster.ca_cert))
    with ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", cluster.port)),
        server_hostname="127.0.0.1",
    ) as tls:
        assert tls.version() is not None
    assert cluster.running


def test_namespace_fixture_is_fresh(namespace: str, kubectl: Kubectl) -> None:
    assert kubectl("get", "namespace", namespace, "-o", "name").stdout.strip() == (
        f"namespace/{namespace}"
    )
    assert kubectl("get", "all", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_service_account_kubeconfig_obeys_rbac(
    cluster: Cluster, kubectl: Kubectl, namespace: str
) -> None:
    sa_config = cluster.service_account_kubeconfig(namespace, "reader")
    who = kubectl("auth", "whoami", "-o", "json", kubeconfig=sa_config)
    assert (
        json.loads(who.stdout)["status"]["userInfo"]["username"]
        == f"system:serviceaccount:{namespace}:reader"
    )
    denied = kubectl("get", "configmaps", "-n", namespace, kubeconfig=sa_config, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr
    kubectl(
        "create", "role", "read-cm", "--verb=get,list", "--resource=configmaps", "-n", namespace
    )
    kubectl(
        "create",
        "rolebinding",
        "read-cm",
        "--role=read-cm",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    allowed = kubectl("get", "configmaps", "-n", namespace, kubeconfig=sa_config, check=False)
    assert allowed.returncode == 0, allowed.stderr
    # Still nothing outside the namespace.
    other = kubectl("get", "configmaps", "-n", "default", kubeconfig=sa_config, check=False)
    assert "forbidden" in other.stderr


def test_kubectl_error_carries_stderr(kubectl: Kubectl) -> None:
    with pytest.raises(devcluster.KubectlError) as info:
        kubectl("get", "nosuchkind")
    assert "nosuchkind" in str(info.value)


def test_tiny_crd_schema_cel_printer_and_status(
    widget_crd: str, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("apply", "--server-side", "-f", "-", input=widget("w1", namespace, 3))
    table = kubectl("get", "widgets", "-n", namespace).stdout
    assert "SIZE" in table.splitlines()[0]
    assert "w1" in table

    too_small = kubectl("apply", "-f", "-", input=widget("w2", namespace, 0), check=False)
    assert too_small.returncode != 0
    assert "spec.size" in too_small.stderr

    changed = kubectl("apply", "-f", "-", input=widget("w1", namespace, 3, "b"), check=False)
    assert changed.returncode != 0
    assert "frozen is immutable" in changed.stderr

    kubectl(
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Ready"}}',
    )
    kubectl("apply", "--server-side", "-f", "-", input=widget("w1", namespace, 4))
    obj = json.loads(kubectl("get", "widget", "w1", "-n", namespace, "-o", "json").stdout)
    assert obj["status"]["phase"] == "Ready"
    assert obj["spec"]["size"] == 4
    explained = kubectl("explain", "widget.spec.size").stdout
    assert "How big the widget is." in explained


def test_issue_serving_cert_is_trusted_by_cluster_ca(cluster: Cluster) -> None:
    """What a webhook server on loopback needs: a cert the apiserver (trusting our CA) accepts."""
    cert, key = cluster.issue_serving_cert("webhook")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert), str(key))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client_ctx = ssl.create_default_context(cafile=str(cluster.ca_cert))
        for host in ("127.0.0.1", "localhost"):
            if host == "localhost":
                thread.join(timeout=10)
                thread = threading.Thread(target=serve, daemon=True)
                thread.start()
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                client_ctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                assert tls.recv(5) == b"hello"
        thread.join(timeout=10)


def test_start_and_stop_a_second_cluster(tmp_path: Path, cluster: Cluster) -> None:
    """A second, independent control plane: starts, answers, and leaves no process behind."""
    other = devcluster.start(tmp_path / "second", tools=cluster.tools)
    try:
        assert other.port != cluster.port
        ns = other.create_namespace("only-here")
        assert other.kubectl("get", "namespace", ns, check=False).returncode == 0
        assert cluster.kubectl("get", "namespace", ns, check=False).returncode != 0
        pids = [p.popen.pid for p in other._processes]
    finally:
        other.stop()
    assert not other.running
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    other.stop()  # idempotent


def test_ensure_tools_script_and_python_agree_on_the_bin_dir(repo_root: Path) -> None:
    """hack/ensure-tools.sh (a fast no-op here) prints the directory Python looks in."""
    printed = subprocess.run(
        ["bash", str(repo_root / "hack" / "ensure-tools.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(printed) == devcluster.ensure_tools(repo_root).bin_dir
    assert not devcluster.Tools(Path(printed)).missing()


def test_missing_tools_are_an_error_not_a_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> None:
    monkeypatch.delenv("SLUICE_BIN_DIR", raising=False)
    monkeypatch.setenv("SLUICE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(devcluster.ToolsError, match="missing"):
        devcluster.ensure_tools(repo_root, build=False)
    monkeypatch.setenv("SLUICE_BIN_DIR", str(tmp_path))
    with pytest.raises(devcluster.ToolsError, match="lacks"):
        devcluster.ensure_tools(repo_root)
