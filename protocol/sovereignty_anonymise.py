"""Derived genes: the per-receiver, optionally pseudonymised form of a gene we authored.

Anonymisation and re-scoping change the signed body, so the outgoing gene is then a
*derived* gene: same codons and action, its own id (per receiver), origin and author this
node, signed by us (`derive_for`). The original's signature could not survive the edit,
and claiming the origin's name for a body it never signed would be forgery. Pseudonyms
are HMACs under a per-receiver key derived from the node key (docs/sovereignty.md says
what stays linkable).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from gd.genome import checks
from gd.genome.gene import Gene, ShareScope, gene_id_for
from gd.genome.identity import NodeKey
from gd.protocol.errors import LocalProtocolError

# Anonymised timestamps are rounded down to the hour: fine enough to order versions for
# a person, too coarse to line a version up with an event in the origin's operations.
HLC_ROUND_MS: Final = 3_600_000
# 96-bit pseudonyms: collisions among the values one organisation shares with one peer
# (thousands) have probability ~n^2 / 2^97, i.e. never; and 24 hex characters stay short.
PSEUDONYM_BYTES: Final = 12
PSEUDONYM_PREFIX: Final = "anon-"
# Parameter names must stay valid names (letters, digits, `_`, `.`), hence `_`.
PARAM_PSEUDONYM_PREFIX: Final = "anon_"
# A derived gene's id: 128 bits like `gene_id_for`, so ids keep one size everywhere.
DERIVED_ID_BYTES: Final = 16
_SECRET_TAG: Final = b"gd-anonymisation-secret/1"
_PEER_KEY_TAG: Final = b"gd-anonymisation-peer/1\x00"


def anonymisation_secret(key: NodeKey) -> bytes:
    """The node secret behind every pseudonym, derived from the node key so that it needs
    no separate file and survives a restore; only this node can recompute it."""
    return hmac.new(key.seed, _SECRET_TAG, hashlib.sha256).digest()


def peer_key(secret: bytes, receiver: str) -> bytes:
    """The per-receiver HMAC key: pseudonyms seen by one peer cannot be matched with the
    pseudonyms another peer sees for the same value."""
    return hmac.new(secret, _PEER_KEY_TAG + receiver.encode(), hashlib.sha256).digest()


def pseudonym(key: bytes, value: str) -> str:
    """HMAC-SHA256 pseudonym: stable per (receiver key, value), irreversible without the
    key (a receiver cannot test guesses, unlike with a plain hash)."""
    digest = hmac.new(key, b"value\x00" + value.encode(), hashlib.sha256).digest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_BYTES].hex()


def param_pseudonym(key: bytes, name: str) -> str:
    """A parameter name's pseudonym: like `pseudonym`, but a valid parameter name
    (`supplier_contract_ACME_X12` names the supplier as surely as its value would)."""
    digest = hmac.new(key, b"param\x00" + name.encode(), hashlib.sha256).digest()
    return PARAM_PSEUDONYM_PREFIX + digest[:PSEUDONYM_BYTES].hex()


def derived_id(key: bytes, gene_id: str) -> str:
    digest = hmac.new(key, b"id\x00" + gene_id.encode(), hashlib.sha256).digest()
    return digest[:DERIVED_ID_BYTES].hex()


def round_hlc(hlc: int) -> int:
    """The stamp with its wall time rounded down to `HLC_ROUND_MS` and no logical part."""
    wall = hlc >> 16
    return (wall - wall % HLC_ROUND_MS) << 16


def derive_for(gene: Gene, receiver: str, key: NodeKey, secret: bytes, *, anonymize: bool,
               scope: ShareScope) -> Gene:
    """The form of `gene` that `receiver` gets when it cannot get the original.

    Deterministic (HMAC and Ed25519 are), so re-sending a version sends the same bytes
    and a receiver sees one derived gene per original: its version and version vector
    follow the original's version. Codons, action and numeric param values (the rule
    itself) stay; with `anonymize`, name, purpose, parameter names and text values
    become pseudonyms, the original's parents become pseudonymised ids and the stamp is
    rounded to the hour (docs/sovereignty.md says what stays linkable).

    The first parent is always the per-receiver derivation tag (an HMAC of the
    original's id), and the id is `gene_id_for(us, domain, name, tag)`: any receiver can
    recompute it (`id_is_bound`), and two receivers never share a derived id. Without
    `anonymize` the original's id follows the tag, so the lineage stays readable.

    Only what we authored is ever derived: a gene that merely claims our origin must
    never be re-signed with our key (issue 11, item 3). Raises LocalProtocolError.
    """
    me = key.peer_id
    if gene.origin != me or gene.author != me:
        raise LocalProtocolError(f"gene {gene.id} v{gene.version} was authored by "
                                 f"{gene.author}, origin {gene.origin}: only a gene we "
                                 "authored is derived and signed with our key")
    pkey = peer_key(secret, receiver)
    tag = derived_id(pkey, gene.id)
    if anonymize:
        name = pseudonym(pkey, gene.name)
        purpose = pseudonym(pkey, gene.purpose) if gene.purpose else ""
        params = {param_pseudonym(pkey, k): pseudonym(pkey, v) if isinstance(v, str) else v
                  for k, v in gene.params.items()}
        parents = (tag, *(derived_id(pkey, p) for p in gene.parents))
        hlc = round_hlc(gene.hlc)
    else:
        name, purpose, params, hlc = gene.name, gene.purpose, dict(gene.params), gene.hlc
        parents = (tag, gene.id, *gene.parents)
    derived = Gene(
        id=gene_id_for(me, gene.domain, name, tag), domain=gene.domain, name=name,
        codons=gene.codons, action=gene.action, purpose=purpose, origin=me, params=params,
        version=gene.version, vv={me: gene.version}, hlc=hlc,
        parents=parents[:checks.MAX_PARENTS], scope=scope,
    )
    return derived.signed(key)

