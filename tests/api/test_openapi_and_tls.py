"""The OpenAPI document matches the served routes and the committed copy; TLS rules."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest
from api_support import prepare, start
from tls_cert import self_signed

from gd.node.api.openapi import build_openapi, render
from gd.node.api.routes import ALL_ROUTES
from gd.node.api.settings import ApiSettings, ApiSettingsError
from gd.node.config import ConfigError, parse_config
from gd.node.daemon import run_daemon

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_matches_the_route_table():
    """Fails when a route changes without `python -m gd.node.api.openapi > docs/openapi.json`."""
    assert DOC.read_text() == render(build_openapi(ALL_ROUTES))


async def test_served_openapi_is_the_committed_one_and_lists_every_route(api_node):
    async with api_node.client() as http:  # public: no credential needed
        reply = await http.get("/v1/openapi.json")
    assert reply.status_code == 200
    served = reply.json()
    assert served == json.loads(DOC.read_text())
    assert served["openapi"] == "3.1.0"
    for route in ALL_ROUTES:
        assert route.method.lower() in served["paths"][route.path], route.path


def test_api_config_rejects_unknown_keys_and_bad_values():
    base = {"node": {"org": "a", "region": "eu"}}
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({**base, "api": {"listne": "127.0.0.1:1"}})
    with pytest.raises(ConfigError, match=r"HOST:PORT|IP address"):
        parse_config({**base, "api": {"listen": "localhost"}})
    with pytest.raises(ConfigError, match="go together"):
        parse_config({**base, "api": {"tls_cert": "c.pem"}})
    assert parse_config({**base, "api": {"listen": "127.0.0.1:8443"}}).api.host_port() == (
        "127.0.0.1", 8443)


def test_beyond_loopback_needs_tls(tmp_path):
    with pytest.raises(ApiSettingsError, match="TLS"):
        ApiSettings(listen="0.0.0.0:8443").check_exposure(tmp_path)
    ApiSettings(listen="127.0.0.1:0").check_exposure(tmp_path)  # loopback: fine


async def test_daemon_refuses_to_start_exposed_without_tls(tmp_root):
    node, cfg = prepare(tmp_root, listen="0.0.0.0:0")
    from gd_testkit import key_from_int

    with pytest.raises(ConfigError, match=r"TLS 1\.3"):
        await run_daemon(node.home, cfg, key_from_int(1), cortex=node.cortex, listen=None,
                         bootstrap=None, handle_signals=False)
    assert not node.home.pid_path.exists() or not node.home.control_socket.exists()
    node.cortex.close()


async def test_https_serves_tls13_only(nursery, tmp_root):
    cert, key = self_signed(tmp_root)
    node, cfg = prepare(tmp_root, tls_cert=str(cert), tls_key=str(key))
    await start(nursery, node, cfg)
    assert node.url.startswith("https://127.0.0.1:")
    trusted = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(base_url=node.url, verify=trusted, headers={
            "Authorization": f"Bearer {node.tokens['viewer']}"}) as http:
        reply = await http.get("/v1/status")
    assert reply.status_code == 200
    assert reply.json()["api"]["url"] == node.url
    old = ssl.create_default_context(cafile=str(cert))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    async with httpx.AsyncClient(base_url=node.url, verify=old) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/v1/status")
    node.daemon.stop()
