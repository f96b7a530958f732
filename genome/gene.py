"""Codon and Gene: a versioned, signed decision rule.

A gene says: in `domain`, when every codon holds on the state vector, take `action`
(with `params`) for `purpose`. Its identity is `id`; each edit is a new `version` with a
version vector (`vv`, one counter per organisation that edited it) and a hybrid logical
clock stamp (`hlc`), signed by the editing node (`author`).

Two parts, deliberately separated:

* the **body** (everything in `BODY_FIELDS`) is what travels between organisations; it
  is signed by `author` and its SHA-256 is the `version_hash`;
* the **local** part (`status`, experience counters) is this node's own view: a gene
  that is `native` at its origin arrives here `adaptation_pending`, and approving it
  must not invalidate the origin's signature.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from gd.genome import canonical, checks

# Re-exported: Codon and ShareScope lived here before issue 15 split the module.
from gd.genome.codon import OPERATORS as OPERATORS
from gd.genome.codon import Codon as Codon
from gd.genome.codon import ShareScope as ShareScope
from gd.genome.errors import DecodeError, SignatureError, ValidationError
from gd.genome.gene_decode import stored_fields, wire_fields
from gd.genome.identity import NodeKey, is_peer_id, verify
from gd.genome.memo import memo

# Canonical msgpack of a gene's wire map around its body: a 2-entry map, key "body", the
# body's own bytes, key "sig", the signature (keys in sorted order).
_WIRE_BODY = b"\x82\xa4body"
_WIRE_SIG = b"\xa3sig"
SIGNATURE_LEN = 64
_ID_MATCH = checks.ID_RE.match
_LOCAL_FIELDS = frozenset(("status", "successes", "failures"))


class GeneStatus(enum.StrEnum):
    NATIVE = "native"
    ADAPTATION_PENDING = "adaptation_pending"
    REJECTED = "rejected"
    RETIRED = "retired"
    REVOKED = "revoked"


BODY_FIELDS = (
    "id", "domain", "name", "codons", "action", "params", "purpose", "version", "vv",
    "hlc", "origin", "author", "parents", "scope",
)


def gene_id_for(origin: str, domain: str, name: str, derived_from: str = "") -> str:
    """Deterministic id: the same origin importing the same named rule twice gets one
    gene (a second import is a new version), and ids never collide across origins.

    The id commits to origin and domain, so any receiver can recompute it and no peer
    can publish a version under another origin's id or move a gene to another domain
    (issue 11: a partner once took over our loan gene's id with a turbofan version).
    `derived_from` is a derived gene's first parent (protocol/sovereignty.py,
    `derive_for`): one original yields one derived gene per receiver."""
    parts = [origin, domain, name, derived_from] if derived_from else [origin, domain, name]
    return canonical.sha256(canonical.encode_texts(parts))[:16].hex()


def id_is_bound(gene: Gene) -> bool:
    """Does `gene.id` commit to its origin, domain and name (`gene_id_for`), either as
    an authored gene or as a derived one (first parent as the derivation tag)?"""
    if gene.id == gene_id_for(gene.origin, gene.domain, gene.name):
        return True
    return bool(gene.parents) and gene.id == gene_id_for(
        gene.origin, gene.domain, gene.name, gene.parents[0])


@dataclass(frozen=True)
class Gene:
    """A signed, versioned decision rule plus this node's local view of it."""

    id: str
    domain: str
    name: str
    codons: tuple[Codon, ...]
    action: str
    purpose: str
    origin: str
    params: Mapping[str, checks.ParamValue] = field(default_factory=dict)
    version: int = 1
    vv: Mapping[str, int] = field(default_factory=dict)
    hlc: int = 0
    author: str = ""
    parents: tuple[str, ...] = ()
    scope: ShareScope = field(default_factory=ShareScope)
    signature: bytes = b""
    # Local, unsigned.
    status: GeneStatus = GeneStatus.NATIVE
    successes: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        checks.ident("id", self.id)
        checks.slug("domain", self.domain)
        checks.text("name", self.name, checks.MAX_NAME_LEN, required=True)
        codons = checks.nonempty_tuple("codons", self.codons, checks.MAX_CODONS)
        for i, codon in enumerate(codons):
            if not isinstance(codon, Codon):
                raise ValidationError(f"codons[{i}]", "expected a Codon")
        set_(self, "codons", codons)
        checks.slug("action", self.action)
        set_(self, "params", MappingProxyType(checks.params("params", self.params)))
        checks.text("purpose", self.purpose, checks.MAX_PURPOSE_LEN)
        if not is_peer_id(self.origin):
            raise ValidationError("origin", f"{self.origin!r} is not an Ed25519 peer id")
        checks.uint("version", self.version, minimum=1)
        vv = checks.require_map("vv", self.vv)
        if len(vv) > checks.MAX_VV_ENTRIES:
            raise ValidationError("vv", f"has {len(vv)} entries, limit {checks.MAX_VV_ENTRIES}")
        vv_out: dict[str, int] = {}
        for k in sorted(vv):
            count = vv[k]
            vv_out[checks.text("vv.key", k, checks.MAX_ID_LEN, required=True)] = (
                count if type(count) is int and 1 <= count <= checks.MAX_U64
                else checks.uint(f"vv.{k}", count, minimum=1))  # raises, named
        set_(self, "vv", MappingProxyType(vv_out))
        checks.uint("hlc", self.hlc)
        if self.author and not is_peer_id(self.author):
            raise ValidationError("author", f"{self.author!r} is not an Ed25519 peer id")
        parents = tuple(self.parents)
        if len(parents) > checks.MAX_PARENTS:
            raise ValidationError("parents", f"more than {checks.MAX_PARENTS} parents")
        for i, parent in enumerate(parents):
            if type(parent) is not str or not _ID_MATCH(parent):
                checks.ident(f"parents[{i}]", parent)  # raises, named
        set_(self, "parents", parents)
        if not isinstance(self.scope, ShareScope):
            raise ValidationError("scope", "expected a ShareScope")
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, SIGNATURE_LEN):
            raise ValidationError("signature", "expected 64 bytes (or none before signing)")
        if type(self.status) is not GeneStatus:
            set_(self, "status", GeneStatus(self.status))
        checks.uint("successes", self.successes)
        checks.uint("failures", self.failures)

    # -- construction -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        key: NodeKey,
        *,
        domain: str,
        name: str,
        codons: Iterable[Codon],
        action: str,
        purpose: str = "",
        params: Mapping[str, checks.ParamValue] | None = None,
        hlc: int = 0,
        parents: Iterable[str] = (),
        scope: ShareScope | None = None,
        status: GeneStatus = GeneStatus.NATIVE,
        gene_id: str | None = None,
    ) -> Gene:
        """A new gene, version 1, authored and signed by `key`'s node (in place, with
        its author set: as `signed` would, without a copy; issue 15)."""
        origin = key.peer_id
        gene = cls(
            id=gene_id or gene_id_for(origin, domain, name),
            domain=domain, name=name, codons=tuple(codons), action=action,
            purpose=purpose, origin=origin, params=params or {}, version=1,
            vv={origin: 1}, hlc=hlc, parents=tuple(parents), scope=scope or ShareScope(),
            author=origin, status=status,
        )
        # An id computed just above is bound by construction; a caller's is checked.
        if gene_id and not id_is_bound(gene):
            raise ValidationError("id", f"{gene.id} is not the id of this origin, domain and "
                                  f"name ({gene_id_for(origin, domain, name)}): peers would "
                                  "refuse it")
        return gene._sign_new(key)

    def edited(self, key: NodeKey, *, hlc: int, version: int | None = None,
               **changes: Any) -> Gene:
        """The next version after an edit by `key`'s node: its vv counter bumped,
        re-signed. Changes to body fields only; local fields carry over.

        `version` defaults to this version + 1. Version numbers are Lamport-style: a node
        that has seen other branches of the gene passes one above every version it holds
        (`Cortex.next_version`), so two different bodies never share (id, version) in
        one store; the version vector, not this number, decides causality."""
        bad = set(changes) - set(BODY_FIELDS) - {"status"}
        if bad or {"id", "origin", "version", "vv", "author"} & set(changes):
            raise ValidationError(",".join(sorted(bad or changes)), "cannot be edited directly")
        for name in ("domain", "name"):  # the id commits to both (`gene_id_for`)
            if name in changes and changes[name] != getattr(self, name):
                raise ValidationError(name, "is part of the gene's id and cannot change; "
                                      "a renamed or re-domained rule is a new gene")
        number = self.version + 1 if version is None else version
        if number <= self.version:
            raise ValidationError("version", f"{number} does not follow {self.version}")
        vv = dict(self.vv)
        vv[key.peer_id] = vv.get(key.peer_id, 0) + 1
        return replace(self, version=number, vv=vv, hlc=hlc, signature=b"",
                       author=key.peer_id, **changes)._sign_new(key)

    # -- content, hash, signature -------------------------------------------------
    @memo
    def _body(self) -> dict[str, Any]:
        return self._plain_body()

    def _plain_body(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "author": self.author,
            "codons": [c.to_plain() for c in self.codons],
            "domain": self.domain,
            "hlc": self.hlc,
            "id": self.id,
            "name": self.name,
            "origin": self.origin,
            "params": dict(self.params),
            "parents": list(self.parents),
            "purpose": self.purpose,
            "scope": self.scope.to_plain(),
            "version": self.version,
            "vv": dict(self.vv),
        }

    def _packed_body(self) -> dict[str, Any]:
        """`_plain_body` for the packer only: codon terms and parents stay tuples, which
        msgpack writes as the arrays their lists would be (same bytes, pinned by
        tests/genome/test_gene_golden.py), so no list is built per term (ADR 0050)."""
        scope = self.scope
        return {
            "action": self.action,
            "author": self.author,
            "codons": [{"op": c.op, "terms": c.terms, "threshold": c.threshold}
                       for c in self.codons],
            "domain": self.domain,
            "hlc": self.hlc,
            "id": self.id,
            "name": self.name,
            "origin": self.origin,
            "params": dict(self.params),
            "parents": self.parents,
            "purpose": self.purpose,
            "scope": {"forward": scope.forward, "residency": scope.residency},
            "version": self.version,
            "vv": dict(self.vv),
        }

    def body(self) -> dict[str, Any]:
        """The signed part, as canonical plain data (keys sorted). A fresh copy."""
        return dict(self._body)

    @memo
    def signing_bytes(self) -> bytes:
        return canonical.encode_plain(self._packed_body())

    @memo
    def wire_bytes(self) -> bytes:
        """Canonical bytes of `to_wire()`: what peers and the version store hold.

        Built around the body bytes already held (`signing_bytes`): the canonical map
        {"body": ..., "sig": ...} is a two-entry header, the body, the signature."""
        return (_WIRE_BODY + self.signing_bytes + _WIRE_SIG
                + canonical.encode_plain(self.signature))

    @memo
    def version_hash(self) -> bytes:
        """SHA-256 of the canonical body: names this exact version everywhere."""
        return canonical.sha256(self.signing_bytes)

    def signed(self, key: NodeKey) -> Gene:
        body = self.body()
        body["author"] = key.peer_id
        signing = canonical.encode_plain(body)
        gene = copy.copy(self)  # not `replace`: only author and signature change, no re-check
        for cached in ("_body", "wire_bytes", "version_hash"):  # of the unsigned gene
            gene.__dict__.pop(cached, None)
        gene.__dict__.update(author=key.peer_id, signature=key.sign(signing),
                             signing_bytes=signing)  # the bytes just signed, not re-encoded
        return gene

    def _sign_new(self, key: NodeKey) -> Gene:
        """Sign in place a gene just built with `author` = `key.peer_id`, which no
        other code holds yet (the bytes signed are cached, as `signed` does)."""
        # Not the cached `_body`: kept on every gene, it made the collector's full
        # passes over an import's genes measurably slower.
        signing = canonical.encode_plain(self._packed_body())
        object.__setattr__(self, "signature", key.sign(signing))
        self.__dict__["signing_bytes"] = signing
        return self

    def verify(self) -> None:
        """Raise SignatureError unless `author` signed exactly this body."""
        if not self.signature or not self.author:
            raise SignatureError(f"gene {self.id} v{self.version} is not signed")
        verify(self.author, self.signing_bytes, self.signature)

    def with_local(self, **changes: Any) -> Gene:
        """Change local fields (status, counters) without touching the signed body."""
        bad = set(changes) - {"status", "successes", "failures"}
        if bad:
            raise ValidationError(",".join(sorted(bad)), "is not a local field")
        # The signed body is untouched, so skip re-validating it and keep its cached
        # encodings and hash (a shallow copy carries the cached values): this
        # runs once per gene on every sync apply and status change.
        if "status" in changes:
            changes["status"] = GeneStatus(changes["status"])
        for name in ("successes", "failures"):
            if name in changes:
                checks.uint(name, changes[name])
        clone = copy.copy(self)
        for name, value in changes.items():
            object.__setattr__(clone, name, value)
        return clone

    # -- encoding -----------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        """What goes to a peer: the body and its signature, never local state."""
        return {"body": self.body(), "sig": self.signature}

    def to_record(self) -> dict[str, Any]:
        """What the Cortex stores: the wire form plus local state."""
        return {
            "body": self.body(), "sig": self.signature, "status": str(self.status),
            "successes": self.successes, "failures": self.failures,
        }

    def encode(self) -> bytes:
        return canonical.encode_plain(self.to_record())

    @classmethod
    def from_wire(cls, data: Any, **local: Any) -> Gene:
        """A gene from untrusted plain data (a peer's, an import's): every field checked,
        ValidationError naming the field at fault. The common canonical form takes
        `gene_decode.wire_fields`, which accepts only what the checks below accept and
        builds the same gene without them (ADR 0050); anything else, bad input
        included, takes the full path and its errors."""
        fields = wire_fields(data)
        if fields is not None and local.keys() <= _LOCAL_FIELDS:
            status = local.get("status", GeneStatus.NATIVE)
            successes, failures = local.get("successes", 0), local.get("failures", 0)
            if (type(status) is GeneStatus and type(successes) is int
                    and type(failures) is int and 0 <= successes <= checks.MAX_U64
                    and 0 <= failures <= checks.MAX_U64):
                return cls._built(fields, status, successes, failures)
        return cls._from_wire_checked(data, **local)

    @classmethod
    def _from_wire_checked(cls, data: Any, **local: Any) -> Gene:
        data = checks.require_map("gene", data)
        body = checks.require_map("body", data.get("body"))
        checks.known_keys("body", body, set(BODY_FIELDS))
        missing = [f for f in BODY_FIELDS if f not in body]
        if missing:
            raise ValidationError(f"body.{missing[0]}", "is required")
        codons = checks.nonempty_tuple("codons", body["codons"], checks.MAX_CODONS)
        return cls(
            id=body["id"], domain=body["domain"], name=body["name"],
            codons=tuple(Codon.from_plain(c, f"codons[{i}]") for i, c in enumerate(codons)),
            action=body["action"], purpose=body["purpose"], origin=body["origin"],
            params=checks.require_map("params", body["params"]), version=body["version"],
            vv=checks.require_map("vv", body["vv"]), hlc=body["hlc"], author=body["author"],
            parents=tuple(checks.nonempty_tuple("parents", body["parents"], checks.MAX_PARENTS))
            if body["parents"] else (),
            scope=ShareScope.from_plain(body["scope"]), signature=data.get("sig", b""),
            **local,
        )

    @classmethod
    def _built(cls, body: tuple[Any, ...], status: GeneStatus, successes: int,
               failures: int) -> Gene:
        """A gene with its fields set as `__init__` sets them, without `__post_init__`:
        for values already checked (`wire_fields`) or stored by this node. One store per
        field in field order, as `__init__` makes them: the instance dict then shares its
        keys with every other gene's (240 bytes, not 464 as after `dict.update`)."""
        gene = object.__new__(cls)
        d = gene.__dict__
        (d["id"], d["domain"], d["name"], d["codons"], d["action"], d["purpose"], d["origin"],
         d["params"], d["version"], d["vv"], d["hlc"], d["author"], d["parents"], d["scope"],
         d["signature"]) = body
        d["status"], d["successes"], d["failures"] = status, successes, failures
        return gene

    @classmethod
    def from_stored(cls, data: Any, *, raw: bytes | None = None,
                    status: GeneStatus | str = GeneStatus.NATIVE, successes: int = 0,
                    failures: int = 0) -> Gene:
        """Rebuild a gene from the Cortex's own bytes, which `from_wire` validated before
        they were stored: no second validation (≈4× cheaper, and every scan, sync send
        and repair reads genes this way). `raw`, the stored canonical bytes, becomes the
        cached `wire_bytes`, so what is hashed and sent is exactly what was stored.
        Anything that comes from outside the node goes through `from_wire`; the Cortex's
        integrity check (`check_indexes`) also re-validates with `from_wire`.
        Structure is checked, values trusted (exactly which: ADR 0050); a record of the
        wrong shape raises DecodeError."""
        try:
            fields = stored_fields(data)
            if type(status) is not GeneStatus:
                status = GeneStatus(status)
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"stored gene record has the wrong shape: {exc!r}") from None
        gene = cls._built(fields, status, successes, failures)
        if raw is not None:
            raw = bytes(raw)
            gene.__dict__["wire_bytes"] = raw
            # A version record is {"body": <signed body>, "sig": ...} (`wire_bytes`), so
            # the body's bytes, which the version hash and the signature cover, are a
            # slice of it: hashing a version read from the store (every feed entry the
            # sender checks) re-encodes nothing.
            tail = _WIRE_SIG + canonical.encode_plain(gene.signature)
            if raw.startswith(_WIRE_BODY) and raw.endswith(tail):
                gene.__dict__["signing_bytes"] = raw[len(_WIRE_BODY):len(raw) - len(tail)]
        return gene

    @classmethod
    def from_record(cls, data: Any) -> Gene:
        data = checks.require_map("gene", data)
        return cls.from_wire(
            data, status=GeneStatus(data.get("status", "native")),
            successes=data.get("successes", 0), failures=data.get("failures", 0),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Gene:
        """Decode Cortex bytes; ValidationError/DecodeError on anything malformed."""
        return cls.from_record(canonical.decode(raw))

    def condition_text(self) -> str:
        return " and ".join(str(c) for c in self.codons)

    def __hash__(self) -> int:
        return hash((self.version_hash, self.status))
