"""The control plane over real TLS with asyncio's lowered per-connection read buffer
(``controlplane.TLS_READ_BUFFER``): the buffer is one TLS record, and bodies many records long
still arrive whole, over keep-alive connections."""

from __future__ import annotations

import ssl
from asyncio import sslproto
from pathlib import Path

import aiohttp
from aiohttp import web

from sluice_operator import controlplane, outofcluster
from sluice_operator.reports import Reports
from sluice_sidecar.contract import UsageEntry, UsageReport

POD = "authentication.kubernetes.io/pod-name"


async def review(token: str, audiences: list[str]) -> controlplane.TokenUser | None:
    if token != "tok":
        return None
    return controlplane.TokenUser("system:serviceaccount:team-a:app", {POD: ("p",)})


def test_create_app_lowers_asyncios_tls_read_buffer_to_one_record() -> None:
    sslproto.SSLProtocol.max_size = 256 * 1024  # the standard library's value
    controlplane.create_app(controlplane.ConfigBoard(), controlplane.Auth(review=review), bool)
    assert sslproto.SSLProtocol.max_size == controlplane.TLS_READ_BUFFER == 16 * 1024
    controlplane.lean_tls_reads()  # twice: still one record, never raised
    assert sslproto.SSLProtocol.max_size == controlplane.TLS_READ_BUFFER


async def test_large_reports_arrive_whole_over_tls(tmp_path: Path) -> None:
    outofcluster.ensure_certificates(tmp_path, "127.0.0.1")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_tls = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    reports = Reports()
    taken: list[UsageReport] = []

    def sink(report: UsageReport) -> bool:
        taken.append(report)
        return reports.add(report, float(report.seq))

    app = controlplane.create_app(
        controlplane.ConfigBoard(), controlplane.Auth(review=review), sink
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    entries = tuple(
        UsageEntry(route=f"route-{i}", backend="b", requests=i, latency_p50_ms=1.5)
        for i in range(4000)
    )
    headers = {"Authorization": "Bearer tok", "Content-Type": "application/json"}
    try:
        connector = aiohttp.TCPConnector(ssl=client_tls, limit=1)  # one keep-alive connection
        async with aiohttp.ClientSession(connector=connector) as session:
            for seq in (1, 2, 3):
                body = UsageReport(
                    namespace="team-a",
                    pod="p",
                    config_hash="h",
                    seq=seq,
                    window_start=0,
                    window_end=1,
                    usage=entries[: 1000 * (seq + 1)],
                ).model_dump_json(by_alias=True)
                assert len(body) > 10 * controlplane.TLS_READ_BUFFER
                async with session.post(
                    f"https://127.0.0.1:{port}/v1/reports", data=body, headers=headers
                ) as r:
                    assert r.status == 200
                    assert await r.json() == {"accepted": True}
    finally:
        await runner.cleanup()
    assert [len(t.usage) for t in taken] == [2000, 3000, 4000]
    assert taken[-1].usage == entries
    assert (
        reports.route_status("team-a", "route-3999", "h", now=3.0)["backends"][0]["requests"]
        == 3999
    )
