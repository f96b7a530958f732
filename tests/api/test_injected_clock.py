"""The API on the daemon's injected clock (issue 12): token expiry, rate-limit refill,
OIDC exp/nbf, job stamps and event times all read the `Clock` they are given, so these
tests move a `ManualClock` instead of sleeping; and peer events follow the gate's
connection events (`Gate.on_peer`) instead of a once-a-second poll of the peer table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from api_support import ApiNode
from daemon_cluster import DaemonCluster
from oidc_issuer import AUDIENCE, CLIENT_ID, running_issuer

from gd.crdt.clock import ManualClock
from gd.node.api.events import EventBus, PeerEvents
from gd.node.api.job_store import Job, JobStore, new_job_id
from gd.node.api.oidc import OidcError, OidcVerifier, check_times
from gd.node.api.oidc_settings import OidcSettings, RoleMap
from gd.node.api.ratelimit import RateLimiter
from gd.node.api.roles import Role
from gd.node.api.tokens import TokenStore
from gd.node.net.gate import PeerChange
from gd.node.net.peers import PeerTable

START_S = 1_700_000_000.0  # ManualClock's default wall time: far from the real one


def test_token_expires_on_the_injected_clock(tmp_root: Path) -> None:
    from gd.node.store.cortex import Cortex

    clock = ManualClock(wall=START_S)
    cortex = Cortex.open(tmp_root / "cortex")
    try:
        store = TokenStore(cortex, clock)
        record, secret = store.create(Role.VIEWER, ("*",), expires_in_s=60)
        assert record.created_ms == int(START_S * 1000)
        assert store.verify(secret)[0] is not None
        clock.advance(59.9)
        assert store.verify(secret)[0] is not None
        clock.advance(0.1)
        token, why = store.verify(secret)
        assert token is None and why == "token expired"
        assert record.to_json(store.now_ms())["state"] == "expired"
    finally:
        cortex.close()


def test_rate_limit_refills_on_the_injected_clock() -> None:
    clock = ManualClock()
    limiter = RateLimiter(2.0, 2, clock)
    assert limiter.check("t") == 0.0 and limiter.check("t") == 0.0
    assert limiter.check("t") == pytest.approx(0.5)
    clock.advance(0.25)
    assert limiter.check("t") == pytest.approx(0.25)  # half a request refilled
    clock.advance(0.25)
    assert limiter.check("t") == 0.0


def test_job_stamps_come_from_the_injected_clock(tmp_root: Path) -> None:
    from gd.node.store.cortex import Cortex

    clock = ManualClock(wall=START_S)
    cortex = Cortex.open(tmp_root / "cortex")
    try:
        jobs = JobStore(cortex, clock)
        job = jobs.add(Job(id=new_job_id(jobs.now_ms()), kind="evaluate", gene_id="g1",
                           domain="turbofan", actor="test", params={}))
        assert job.created_ms == int(START_S * 1000)
        assert int(job.id[:16], 16) == job.created_ms  # ids sort by creation time
        clock.advance(5)
        assert jobs.cancel(job.id).finished_ms == int((START_S + 5) * 1000)
    finally:
        cortex.close()


def test_event_time_is_the_clock_at_publication() -> None:
    clock = ManualClock(wall=START_S)
    bus = EventBus(clock)
    event = bus.publish("job.finished", {"job": "j"})
    clock.advance(30)  # serialising later does not change when it happened
    body = json.loads(event.sse().split("data: ", 1)[1])
    assert body["time_ms"] == int(START_S * 1000)


def test_check_times_exp_nbf_iat_with_leeway() -> None:
    now = START_S
    check_times({"exp": now + 1, "nbf": now, "iat": now}, now, 0)
    with pytest.raises(OidcError, match="expired"):
        check_times({"exp": now}, now, 0)
    check_times({"exp": now - 5}, now, 10)  # within the leeway
    with pytest.raises(OidcError, match="not valid yet"):
        check_times({"exp": now + 600, "nbf": now + 11}, now, 10)
    with pytest.raises(OidcError, match="not valid yet"):
        check_times({"exp": now + 600, "iat": now + 11}, now, 10)
    with pytest.raises(OidcError, match="not a number"):
        check_times({"exp": "soon"}, now, 0)
    with pytest.raises(OidcError, match="not a number"):
        check_times({"exp": now + 600, "nbf": True}, now, 0)


async def test_oidc_exp_and_nbf_on_the_injected_clock() -> None:
    """Tokens minted for a time far from now: valid only if the verifier reads the
    ManualClock (PyJWT's own check reads the system time)."""
    clock = ManualClock(wall=START_S)
    with running_issuer() as issuer:
        settings = OidcSettings(issuer=issuer.url, audience=AUDIENCE, client_id=CLIENT_ID,
                                roles=(RoleMap("gd-approvers", Role.APPROVER, ("turbofan",)),))
        verifier = OidcVerifier(settings, clock=clock)
        t0 = int(START_S)
        token = issuer.token(iat=t0, exp=t0 + 600)
        assert (await verifier.verify(token)).subject == "alice"
        early = issuer.token(iat=t0, nbf=t0 + 300, exp=t0 + 600)
        with pytest.raises(OidcError, match="not valid yet"):
            await verifier.verify(early)
        clock.advance(600 + verifier.settings.leeway_s)
        with pytest.raises(OidcError, match="expired"):  # the cache ends at exp too
            await verifier.verify(token)
        late = issuer.token(iat=t0 + 900, nbf=t0 + 900, exp=t0 + 1500)
        with pytest.raises(OidcError, match="not valid yet"):
            await verifier.verify(late)
        clock.advance(300)
        assert (await verifier.verify(late)).subject == "alice"


def test_peer_events_publish_each_change_at_once() -> None:
    bus = EventBus(ManualClock())
    key, receive = bus.subscribe()
    listener = PeerEvents(bus, PeerTable())
    listener(PeerChange("peer-a", up=True))
    listener(PeerChange("peer-a", up=False))
    got = [receive.receive_nowait() for _ in range(2)]
    assert [(e.kind, e.data["peer"]) for e in got] == [("peer.up", "peer-a"),
                                                       ("peer.down", "peer-a")]
    assert got[0].data["org"] == "" and got[0].data["region"] == ""
    bus.unsubscribe(key)


async def test_peer_up_and_down_events_follow_the_gate(api_node: ApiNode, tmp_root: Path,
                                                       nursery: trio.Nursery) -> None:
    """A peer's handshake and its going reach `/v1/events` as they happen: no tick."""
    events: list[dict[str, object]] = []
    subscribed = trio.Event()

    async def listen() -> None:
        async with api_node.client("viewer") as http, http.stream(
                "GET", "/v1/events", params={"kinds": "peer.up,peer.down"}) as sse:
            async for line in sse.aiter_lines():
                if line.startswith(": subscribed"):
                    subscribed.set()
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))

    nursery.start_soon(listen)
    with trio.fail_after(30):
        await subscribed.wait()
    assert api_node.daemon is not None
    cluster = DaemonCluster(tmp_root)
    try:
        async with trio.open_nursery() as inner:
            peer = await cluster.start_daemon(inner, 2, boot=[api_node.daemon])
            await cluster.connected(api_node.daemon, peer, timeout=60)
            with trio.fail_after(30):
                while not any(e["kind"] == "peer.up" for e in events):
                    await trio.sleep(0.02)
            up = next(e for e in events if e["kind"] == "peer.up")
            assert up["peer"] == peer.peer_id and up["org"] == "org2"
            assert up["region"] == "eu"
            peer.stop()
        with trio.fail_after(30):
            while not any(e["kind"] == "peer.down" for e in events):
                await trio.sleep(0.02)
        down = next(e for e in events if e["kind"] == "peer.down")
        assert down["peer"] == peer.peer_id
    finally:
        cluster.close()
