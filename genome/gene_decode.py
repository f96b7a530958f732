"""The cheap paths of `Gene.from_wire` and `Gene.from_stored` (issue 15, ADR 0050).

`wire_fields` is an *acceptor*, not a second validator: it returns a received body's
fields only when every check `Gene.from_wire` makes (`checks`, `Codon.__post_init__`,
`ShareScope`, `Gene.__post_init__`) passes on the common, canonical form (exact builtin
types, codon terms already sorted), and None otherwise. On None, the caller runs the
original decoder, which accepts the odd-but-valid forms (int thresholds, the `feature`
shorthand, unsorted terms) and raises on bad input exactly as before, naming the field.
So an error can never differ: only input the original accepts is ever taken here, and
it is taken as the original would build it (tests/genome/test_gene_decode.py fuzzes
both against a copy of the old decoder).

`stored_fields` rebuilds a gene from bytes this node wrote after `from_wire` accepted
them: structure only (what would crash later), no re-validation of values.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

from gd.genome import checks
from gd.genome.codon import OPERATORS, Codon, ShareScope
from gd.genome.identity import is_peer_id

_new = object.__new__
# The slots' own setters: a third cheaper than `object.__setattr__` by name, which looks
# the name up first (3 per codon, 12 codons a sync-sized gene).
_SET_OP = Codon.__dict__["op"].__set__
_SET_THRESHOLD = Codon.__dict__["threshold"].__set__
_SET_TERMS = Codon.__dict__["terms"].__set__
_SET_FORWARD = ShareScope.__dict__["forward"].__set__
_SET_RESIDENCY = ShareScope.__dict__["residency"].__set__
_INF = math.inf
_NINF = -math.inf
_U64 = checks.MAX_U64
_I64_MIN = -(2**63)
_OPS = frozenset(OPERATORS)
_ID = checks.ID_RE.match
_SLUG = checks.SLUG_RE.match
_FEATURE = checks.FEATURE_RE.match
_CONTROL = checks._CONTROL_RE.search
_BODY_KEYS = frozenset(("id", "domain", "name", "codons", "action", "params", "purpose",
                        "version", "vv", "hlc", "origin", "author", "parents", "scope"))
_SCOPE_KEYS = frozenset(("forward", "residency"))


def _codons(raw: Any) -> tuple[Codon, ...] | None:
    """Codons in canonical form ({op, terms, threshold}, float threshold, [[feature,
    weight], ...] sorted by feature, no zero weight), or None."""
    if type(raw) is not list or not 0 < len(raw) <= checks.MAX_CODONS:
        return None
    out = []
    for c in raw:
        # Three entries, and these three keys (a KeyError otherwise): nothing unknown.
        if type(c) is not dict or len(c) != 3:
            return None
        try:
            op, threshold, terms = c["op"], c["threshold"], c["terms"]
        except KeyError:
            return None
        if (type(op) is not str or op not in _OPS or type(threshold) is not float
                or not _NINF < threshold < _INF  # excludes NaN too
                or type(terms) is not list or not 0 < len(terms) <= checks.MAX_TERMS):
            return None
        if len(terms) == 1:  # the common one-term codon: no list, no loop
            term = terms[0]
            if type(term) is not list or len(term) != 2:
                return None
            name, weight = term
            if (type(name) is not str or not _FEATURE(name) or type(weight) is not float
                    or not _NINF < weight < _INF or weight == 0.0):
                return None
            pairs: tuple[tuple[str, float], ...] = ((name, weight),)
        else:
            built = []
            last = ""  # every feature name is longer: ascending also means no duplicate
            for term in terms:
                if type(term) is not list or len(term) != 2:
                    return None
                name, weight = term
                if (type(name) is not str or name <= last or not _FEATURE(name)
                        or type(weight) is not float or not _NINF < weight < _INF
                        or weight == 0.0):
                    return None
                built.append((name, weight))
                last = name
            pairs = tuple(built)
        codon = _new(Codon)
        _SET_OP(codon, op)
        _SET_THRESHOLD(codon, threshold)
        _SET_TERMS(codon, pairs)
        out.append(codon)
    return tuple(out)


def _text(value: Any, max_len: int, required: bool) -> bool:
    return (type(value) is str and len(value) <= max_len
            and (not required or bool(value.strip())) and not _CONTROL(value))


def _params(raw: Any) -> dict[str, Any] | None:
    if type(raw) is not dict or len(raw) > checks.MAX_PARAMS:
        return None
    for key, value in raw.items():
        if type(key) is not str or not _FEATURE(key):
            return None
        kind = type(value)
        if kind is bool:
            continue
        if kind is int:
            if not _I64_MIN <= value <= _U64:
                return None
        elif kind is float:
            if not _NINF < value < _INF:
                return None
        elif kind is not str or not _text(value, checks.MAX_TEXT_LEN, False):
            return None
    return {key: raw[key] for key in sorted(raw)}


def _vv(raw: Any) -> dict[str, int] | None:
    if type(raw) is not dict or len(raw) > checks.MAX_VV_ENTRIES:
        return None
    for key, count in raw.items():
        if (not _text(key, checks.MAX_ID_LEN, True) or type(count) is not int
                or not 1 <= count <= _U64):
            return None
    return {key: raw[key] for key in sorted(raw)}


def _scope(raw: Any) -> ShareScope | None:
    if type(raw) is not dict or not raw.keys() <= _SCOPE_KEYS:
        return None
    forward, residency = raw.get("forward", False), raw.get("residency", "")
    if type(forward) is not bool or type(residency) is not str or (
            residency and not _SLUG(residency)):
        return None
    scope = _new(ShareScope)
    _SET_FORWARD(scope, forward)
    _SET_RESIDENCY(scope, residency)
    return scope


def wire_fields(data: Any) -> tuple[Any, ...] | None:
    """A received gene's body and signature values, as `Gene.__init__` would set them,
    when every check passes on the common form; None sends the caller to the original
    decoder (to accept an odd form, or to raise the original error)."""
    if type(data) is not dict:
        return None
    body = data.get("body")
    if type(body) is not dict or body.keys() != _BODY_KEYS:
        return None
    signature = data.get("sig", b"")
    id_, domain, name, action = body["id"], body["domain"], body["name"], body["action"]
    origin, author, version, hlc = body["origin"], body["author"], body["version"], body["hlc"]
    parents = body["parents"]
    if (type(id_) is not str or not _ID(id_) or type(domain) is not str or not _SLUG(domain)
            or not _text(name, checks.MAX_NAME_LEN, True)
            or type(action) is not str or not _SLUG(action)
            or not _text(body["purpose"], checks.MAX_PURPOSE_LEN, False)
            or type(origin) is not str or not is_peer_id(origin)
            or type(version) is not int or not 1 <= version <= _U64
            or type(hlc) is not int or not 0 <= hlc <= _U64
            or type(author) is not str or (author and not is_peer_id(author))
            or type(parents) is not list or len(parents) > checks.MAX_PARENTS
            or type(signature) is not bytes or len(signature) not in (0, 64)):
        return None
    for parent in parents:
        if type(parent) is not str or not _ID(parent):
            return None
    codons = _codons(body["codons"])
    params = _params(body["params"])
    vv = _vv(body["vv"])
    scope = _scope(body["scope"])
    if codons is None or params is None or vv is None or scope is None:
        return None
    # In `Gene`'s field order (`Gene._built`).
    return (id_, domain, name, codons, action, body["purpose"], origin,
            MappingProxyType(params), version, MappingProxyType(vv), hlc, author,
            tuple(parents), scope, signature)


def stored_fields(data: Any) -> tuple[Any, ...]:
    """A stored gene's body and signature values (in `Gene`'s field order), with the
    structure checked (maps where maps are read, codon terms as pairs, numbers as floats)
    and the values trusted (the node validated them before it wrote them; ADR 0050).
    Raises KeyError, TypeError or ValueError on a record of the wrong shape."""
    body = data["body"]
    codons = []
    for c in body["codons"]:
        codon = _new(Codon)
        _SET_OP(codon, c["op"])
        _SET_THRESHOLD(codon, float(c["threshold"]))
        terms = c["terms"]
        if len(terms) == 1:  # the common, one-term codon: no generator
            ((name, weight),) = terms
            _SET_TERMS(codon, ((name, float(weight)),))
        else:
            _SET_TERMS(codon, tuple([(name, float(weight)) for name, weight in terms]))
        codons.append(codon)
    raw_scope = body["scope"]
    scope = _new(ShareScope)
    _SET_FORWARD(scope, raw_scope["forward"])
    _SET_RESIDENCY(scope, raw_scope["residency"])
    # Read in the order the decoder before ADR 0050 read them (a record with two faults
    # names the same one), returned in `Gene`'s field order.
    id_, domain, name, action = body["id"], body["domain"], body["name"], body["action"]
    purpose, origin, version = body["purpose"], body["origin"], body["version"]
    hlc, author = body["hlc"], body["author"]
    params, vv = MappingProxyType(dict(body["params"])), MappingProxyType(dict(body["vv"]))
    parents = tuple(body["parents"])
    return (id_, domain, name, tuple(codons), action, purpose, origin, params, version, vv,
            hlc, author, parents, scope, bytes(data["sig"]))
