"""A running daemon acts on `org trust` / `org untrust` at once.

Why: the daemon read its trust anchors (config.toml, HOME/trusted-orgs.toml, the
bootstrap file's pins) only at start, so an org key the operator had just removed kept
certifying peers until a restart. After such a write the daemon reads the anchors again
and drops the connected peers whose membership the change decides (certified by an org
whose pins changed, or claiming such an org uncertified): their next handshake checks
their certificate against the new pins.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gd.genome.certificate import TrustAnchors
from gd.node.credentials import load_trusted_orgs
from gd.node.net.bootstrap_file import load_bootstrap_orgs


def current_anchors(daemon: Any) -> TrustAnchors:
    """config.toml's pins, HOME/trusted-orgs.toml's, and the bootstrap file's."""
    trust = daemon.cfg.trusted_orgs.merged(load_trusted_orgs(daemon.home.root))
    if daemon.boot_path is not None:
        trust = trust.merged(load_bootstrap_orgs(daemon.boot_path))
    return trust


def changed_orgs(old: TrustAnchors, new: TrustAnchors) -> set[str]:
    """Orgs whose pinned keys differ between `old` and `new`."""
    return {org for org in set(old.orgs) | set(new.orgs)
            if old.orgs.get(org) != new.orgs.get(org)}


async def reload_trust(daemon: Any) -> list[str]:
    """Swap in the anchors read now; drop the peers they concern. Returns those peers."""
    old = daemon.credentials.trust
    new = current_anchors(daemon)
    daemon.credentials = replace(daemon.credentials, trust=new)
    orgs = changed_orgs(old, new)
    affected = sorted(
        rec.peer_id for rec in daemon.table.connected()
        if rec.certified_org in orgs or (rec.certified_org is None and rec.org in orgs))
    if orgs:
        daemon.log.info("trust.reloaded", orgs=sorted(orgs), peers=affected)
    for peer_id in affected:
        await daemon.gate.drop(peer_id,
                               "the org keys this node trusts changed: handshake again",
                               ban=False)
    return affected
