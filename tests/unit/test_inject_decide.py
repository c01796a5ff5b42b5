"""The injection decision, table-driven: every way a pod is injected or skipped, and why."""

from __future__ import annotations

from typing import Any

import pytest

from sluice_operator.inject import InjectorSettings, NamespaceFacts
from sluice_operator.inject import annotations as ann
from sluice_operator.inject.decide import decide

SETTINGS = InjectorSettings(operator_namespace="sluice-system")
OPTED_IN = NamespaceFacts("shop", {ann.INJECT.key: "true"})
NOT_OPTED_IN = NamespaceFacts("shop", {"team": "a"})


def pod(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    host_network: bool | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"generateName": "web-"}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"containers": containers or [{"name": "app", "image": "app:1"}]}
    if host_network is not None:
        spec["hostNetwork"] = host_network
    if init is not None:
        spec["initContainers"] = init
    if volumes is not None:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


STATUS = {ann.STATUS.key: '{"sidecar":"sluice-sidecar"}'}
SIDECAR = {"name": "sluice-sidecar", "image": "x", "restartPolicy": "Always"}

# (id, pod, namespace, namespace facts, inject, code, text in the reasons)
CASES: list[tuple[str, dict[str, Any], str, NamespaceFacts | None, bool, str, str]] = [
    ("namespace opted in", pod(), "shop", OPTED_IN, True, "Injected", 'namespace "shop" has'),
    (
        "pod opted in",
        pod(labels={ann.INJECT.key: "true"}),
        "shop",
        NOT_OPTED_IN,
        True,
        "Injected",
        "pod has label",
    ),
    (
        "pod opted in, namespace opted out",
        pod(labels={ann.INJECT.key: "true"}),
        "shop",
        NamespaceFacts("shop", {ann.INJECT.key: "false"}),
        True,
        "Injected",
        "pod has label",
    ),
    (
        "pod opted out of an opted-in namespace",
        pod(labels={ann.INJECT.key: "false"}),
        "shop",
        OPTED_IN,
        False,
        "SkippedOptedOut",
        "=false",
    ),
    ("not opted in", pod(), "shop", NOT_OPTED_IN, False, "SkippedNotOptedIn", "neither"),
    (
        "label values are exact",
        pod(labels={ann.INJECT.key: "True"}),
        "shop",
        NamespaceFacts("shop", {ann.INJECT.key: "yes"}),
        False,
        "SkippedNotOptedIn",
        "neither",
    ),
    (
        "namespace unknown to the cache: trust the selectors",
        pod(),
        "fresh",
        None,
        True,
        "Injected",
        "not in the injector's cache",
    ),
    (
        "kube-system, even opted in",
        pod(labels={ann.INJECT.key: "true"}),
        "kube-system",
        NamespaceFacts("kube-system", {ann.INJECT.key: "true"}),
        False,
        "SkippedSystemNamespace",
        "excluded",
    ),
    (
        "kube-node-lease",
        pod(labels={ann.INJECT.key: "true"}),
        "kube-node-lease",
        None,
        False,
        "SkippedSystemNamespace",
        "excluded",
    ),
    (
        "the operator's namespace",
        pod(labels={ann.INJECT.key: "true"}),
        "sluice-system",
        NamespaceFacts("sluice-system", {ann.INJECT.key: "true"}),
        False,
        "SkippedOperatorNamespace",
        "operator's own",
    ),
    (
        "mirror pod",
        pod(annotations={"kubernetes.io/config.mirror": "abc"}),
        "shop",
        OPTED_IN,
        False,
        "SkippedMirrorPod",
        "mirror",
    ),
    ("hostNetwork", pod(host_network=True), "shop", OPTED_IN, False, "SkippedHostNetwork", "node"),
    ("hostNetwork false", pod(host_network=False), "shop", OPTED_IN, True, "Injected", "has label"),
    (
        "already injected",
        pod(annotations=STATUS, init=[SIDECAR]),
        "shop",
        OPTED_IN,
        True,
        "AlreadyInjected",
        "already injected",
    ),
    (
        "user container named like the sidecar",
        pod(containers=[{"name": "app"}, {"name": "sluice-sidecar", "image": "mine"}]),
        "shop",
        OPTED_IN,
        False,
        "SkippedNameConflict",
        'named "sluice-sidecar"',
    ),
    (
        "user init container named like the sidecar",
        pod(init=[{"name": "sluice-sidecar", "image": "mine"}]),
        "shop",
        OPTED_IN,
        False,
        "SkippedNameConflict",
        "rename",
    ),
    (
        "reserved volume name",
        pod(volumes=[{"name": "sluice-config", "emptyDir": {}}]),
        "shop",
        OPTED_IN,
        False,
        "SkippedVolumeConflict",
        "sluice-config",
    ),
    (
        "app uses the sidecar's port",
        pod(containers=[{"name": "litellm", "ports": [{"containerPort": 4000}]}]),
        "shop",
        OPTED_IN,
        False,
        "SkippedPortConflict",
        "port 4000",
    ),
    (
        "app uses the admin port",
        pod(containers=[{"name": "app", "ports": [{"containerPort": 4001}]}]),
        "shop",
        OPTED_IN,
        False,
        "SkippedPortConflict",
        "port 4001",
    ),
    (
        "port moved by annotation",
        pod(
            annotations={ann.PORT.key: "5000", ann.ADMIN_PORT.key: "5001"},
            containers=[{"name": "litellm", "ports": [{"containerPort": 4000}]}],
        ),
        "shop",
        OPTED_IN,
        True,
        "Injected",
        "has label",
    ),
    (
        "bad override values are reported, injection goes on",
        pod(annotations={ann.PORT.key: "80", ann.CPU_REQUEST.key: "lots"}),
        "shop",
        OPTED_IN,
        True,
        "Injected",
        "ignored sluice.dev/port='80'",
    ),
]


@pytest.mark.parametrize(
    ("pod_", "namespace", "facts", "inject", "code", "text"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision(
    pod_: dict[str, Any],
    namespace: str,
    facts: NamespaceFacts | None,
    inject: bool,
    code: str,
    text: str,
) -> None:
    decision = decide(pod_, namespace, facts, SETTINGS)
    assert decision.inject is inject
    assert decision.code == code
    assert text in decision.summary
    assert decision.summary.startswith("injected: " if inject else "skipped: ")


def test_conflicts_and_host_network_warn_the_user() -> None:
    for p in (
        pod(host_network=True),
        pod(containers=[{"name": "sluice-sidecar"}]),
        pod(containers=[{"name": "a", "ports": [{"containerPort": 4000}]}]),
    ):
        decision = decide(p, "shop", OPTED_IN, SETTINGS)
        assert decision.warnings
        assert decision.warnings[0].startswith("sluice: sidecar not injected:")


def test_system_namespaces_and_mirror_pods_are_not_even_annotated() -> None:
    assert not decide(pod(), "kube-system", None, SETTINGS).annotate
    assert not decide(pod(), "sluice-system", None, SETTINGS).annotate
    mirror = pod(annotations={"kubernetes.io/config.mirror": "x"})
    assert not decide(mirror, "shop", OPTED_IN, SETTINGS).annotate
    assert decide(pod(host_network=True), "shop", OPTED_IN, SETTINGS).annotate


def test_port_override_onto_the_other_default_is_dropped() -> None:
    decision = decide(pod(annotations={ann.ADMIN_PORT.key: "4000"}), "shop", OPTED_IN, SETTINGS)
    assert decision.inject
    assert any("API port" in r for r in decision.reasons)
    assert decision.warnings


def test_excluded_namespaces_come_from_settings_but_kube_system_always_is() -> None:
    settings = InjectorSettings(excluded_namespaces=frozenset({"legacy"}))
    assert decide(pod(), "legacy", OPTED_IN, settings).code == "SkippedSystemNamespace"
    assert decide(pod(), "kube-system", None, settings).code == "SkippedSystemNamespace"
    assert decide(pod(), "kube-public", None, settings).inject


def test_garbage_in_the_pod_does_not_raise() -> None:
    weird: dict[str, Any] = {
        "metadata": {"labels": None, "annotations": {"x": 1}},
        "spec": {"containers": None, "initContainers": "no", "volumes": [None, 3]},
    }
    assert decide(weird, "shop", OPTED_IN, SETTINGS).inject
    assert decide({}, "shop", OPTED_IN, SETTINGS).inject


def test_missed_reports_opted_in_pods_without_the_sidecar_only() -> None:
    from sluice_operator.inject.decide import missed

    reason = missed(pod(labels={ann.INJECT.key: "true"}), "shop", None, SETTINGS)
    assert reason is not None and "rollout restart" in reason
    injected = pod(
        labels={ann.INJECT.key: "true"}, annotations={ann.STATUS.key: '{"version": "x"}'}
    )
    assert missed(injected, "shop", None, SETTINGS) is None
    assert missed(pod(labels={ann.INJECT.key: "false"}), "shop", OPTED_IN, SETTINGS) is None
    assert missed(pod(labels={ann.INJECT.key: "true"}), "kube-system", None, SETTINGS) is None
    assert missed(pod(host_network=True), "shop", OPTED_IN, SETTINGS) is None


def test_skipped_pods_get_the_decisions_code_and_words() -> None:
    from sluice_operator.inject.decide import skipped

    host = pod(labels={ann.INJECT.key: "true"})
    host["spec"]["hostNetwork"] = True
    assert skipped(host, "shop", None, SETTINGS) is None  # the webhook has not said anything
    said = decide(host, "shop", None, SETTINGS).summary
    host["metadata"]["annotations"] = {ann.INJECT_REASON.key: said}
    found = skipped(host, "shop", None, SETTINGS)
    assert found is not None
    code, message = found
    assert code == "SkippedHostNetwork"
    assert message.startswith("Sluice sidecar not injected: hostNetwork pod")
    injected = pod(labels={ann.INJECT.key: "true"})
    injected["metadata"]["annotations"] = {ann.INJECT_REASON.key: "injected: pod has label"}
    assert skipped(injected, "shop", None, SETTINGS) is None
