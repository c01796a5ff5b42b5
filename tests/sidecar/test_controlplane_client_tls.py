"""The sidecar's control-plane identity: https with the injected CA, plain http only by flag."""

from __future__ import annotations

from sluice_sidecar.controlplane_client import Identity

BASE = {"POD_NAMESPACE": "team-a", "POD_NAME": "p"}


def test_https_is_required_unless_development_says_otherwise() -> None:
    assert Identity.from_env({**BASE, "SLUICE_CONTROL_PLANE_URL": "http://cp:9090"}) is None
    dev = Identity.from_env(
        {
            **BASE,
            "SLUICE_CONTROL_PLANE_URL": "http://cp:9090",
            "SLUICE_CONTROL_PLANE_INSECURE": "true",
        }
    )
    assert dev is not None and dev.url == "http://cp:9090"
    secure = Identity.from_env({**BASE, "SLUICE_CONTROL_PLANE_URL": "https://cp:9090/"})
    assert secure is not None and secure.url == "https://cp:9090" and secure.ca == ""


def test_a_ca_that_is_not_pem_disables_the_control_plane() -> None:
    env = {**BASE, "SLUICE_CONTROL_PLANE_URL": "https://cp:9090"}
    assert Identity.from_env({**env, "SLUICE_CONTROL_PLANE_CA": "not a certificate"}) is None


async def test_the_connector_verifies_with_the_given_ca() -> None:
    identity = Identity.from_env({**BASE, "SLUICE_CONTROL_PLANE_URL": "https://cp:9090"})
    assert identity is not None
    connector = identity.connector()
    try:
        context = connector._ssl
        assert not isinstance(context, bool) and context.check_hostname
    finally:
        await connector.close()
