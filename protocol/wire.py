"""Frames on the wire: length-prefixed msgpack, each carrying a type tag and a version.

    frame = length (4 bytes, big-endian, unsigned) || body (length bytes)
    body  = msgpack array [type: str, version: int, fields: map str -> value]

Why this shape:

* libp2p streams have no message boundaries and `read()` raises at EOF instead of
  returning b"" (notes/py-libp2p.md), so every frame says its length up front and a reader
  never waits for a half-close.
* The length comes first so an oversize frame is refused *before* its body is buffered:
  a hostile peer cannot make us allocate more than `MAX_FRAME_SIZE`.
* The (type, version) pair names a message schema in a registry that other modules
  (handshake, sync, ledger) fill with `@message`-decorated dataclasses; a schema evolves by
  registering a new version beside the old one, never by reinterpreting fields.
* Decoding is strict: an unknown (type, version), a missing or unknown field, a value of
  the wrong type, an oversize or a truncated frame is `RemoteProtocolError`. Nothing a peer
  sends can raise anything else out of `FrameDecoder` (the fuzz tests pin this down).

This module is sans-I/O: bytes in, messages out, messages in, bytes out.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import msgpack

from gd.genome.canonical import unpack_bounded
from gd.genome.errors import DecodeError
from gd.protocol.errors import LocalProtocolError, RemoteProtocolError

# The largest frame body we accept or send. Sync ships genes in batches: ~1.5 KB a gene,
# and throughput over Noise+Yamux stops improving past ~64 KB writes (notes/py-libp2p.md),
# so a 4 MiB frame holds a ~2,500-gene batch with room to spare while bounding the memory
# one stream can pin: 4 MiB x a handful of streams x peers stays in the tens of MiB.
# (For scale: libp2p's own protobuf RPCs cap messages at 4 MiB (go-libp2p-kad-dht
# msgio), and gRPC's default max receive message size is also 4 MiB.)
MAX_FRAME_SIZE = 4 * 1024 * 1024
LENGTH_PREFIX = struct.Struct(">I")
HEADER_SIZE = LENGTH_PREFIX.size
# A frame body is a 3-array with at least a 1-char type: nothing shorter can be valid.
MIN_BODY_SIZE = 4
# Containers inside one frame: bounded well below what MAX_FRAME_SIZE could encode, so a
# frame of tiny nested items cannot cost us gigabytes of Python objects.
MAX_CONTAINER_LEN = 100_000
MAX_TYPE_LEN = 64
TYPE_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

M = TypeVar("M", bound="Message")
Checker = Callable[[Any, str], Any]


class Message:
    """Base of every wire message. Subclasses are frozen dataclasses registered with
    `@message`; `TYPE` and `VERSION` name their schema on the wire."""

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1

    def fields(self) -> dict[str, Any]:
        """The field values as plain msgpack-able data (tuples become arrays, nested
        records their `to_plain()`)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    return value.to_plain() if is_record(type(value)) else value


def is_record(tp: Any) -> bool:
    """Whether `tp` is a nested record a field may hold (`_record`)."""
    return isinstance(tp, type) and isinstance(getattr(tp, "WIRE_ERRORS", None), tuple) \
        and callable(getattr(tp, "from_plain", None)) and callable(getattr(tp, "to_plain", None))


# ---- field type checking ------------------------------------------------------------


def _scalar(kind: type) -> Checker:
    def check(value: Any, path: str) -> Any:
        # bool is an int subclass in Python; on the wire they are different types.
        if type(value) is not kind and not (kind is bytes and type(value) is bytearray):
            raise TypeError(f"{path}: expected {kind.__name__}, got {type(value).__name__}")
        return bytes(value) if isinstance(value, bytes | bytearray) else value

    return check


def _tuple_of(item: Checker) -> Checker:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"{path}: expected an array, got {type(value).__name__}")
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

    return check


def _dict_of(item: Checker) -> Checker:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a map, got {type(value).__name__}")
        out = {}
        for key, val in value.items():
            if type(key) is not str:
                raise TypeError(f"{path}: map key {key!r} is not a str")
            out[key] = item(val, f"{path}.{key}")
        return out

    return check


def _optional(item: Checker) -> Checker:
    def check(value: Any, path: str) -> Any:
        return None if value is None else item(value, path)

    return check


def _record(tp: Any) -> Checker:
    """A nested record (a class with `to_plain()`, `from_plain(plain)` and `WIRE_ERRORS`,
    the errors its `from_plain` raises on bad input): the frame is decoded once and the
    record's own strict checks, with its bounds, build it from the plain value. Its errors
    become TypeError, which `decode_body` reports as RemoteProtocolError and
    `encode_body` as LocalProtocolError."""
    errors: tuple[type[Exception], ...] = tp.WIRE_ERRORS

    def check(value: Any, path: str) -> Any:
        try:
            return tp.from_plain(value)
        except errors as exc:
            raise TypeError(f"{path}: {exc!s:.300}") from None

    return check


def _compile(tp: Any, where: str) -> Checker:
    """A checker for one annotation; only the types msgpack can carry unambiguously."""
    if tp in (int, float, bool, str, bytes):
        return _scalar(tp)
    if is_record(tp):
        return _record(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _tuple_of(_compile(args[0], where))
    if origin is dict and len(args) == 2 and args[0] is str:
        return _dict_of(_compile(args[1], where))
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        return _optional(_compile(inner, where))
    raise LocalProtocolError(f"{where}: field type {tp!r} cannot go on the wire")


@dataclasses.dataclass(frozen=True)
class _Schema:
    cls: type[Message]
    checkers: dict[str, Checker]
    required: frozenset[str]


class MessageRegistry:
    """Maps (type, version) to a message class and the checkers for its fields."""

    def __init__(self) -> None:
        self._schemas: dict[tuple[str, int], _Schema] = {}

    def register(self, cls: type[M]) -> type[M]:
        """Register a frozen dataclass subclass of `Message` (use as a decorator)."""
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise LocalProtocolError(f"{cls!r} is not a Message subclass")
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen or not dataclasses.is_dataclass(cls):
            raise LocalProtocolError(f"{cls.__name__} must be a frozen dataclass")
        tag = getattr(cls, "TYPE", None)
        if not isinstance(tag, str) or not TYPE_RE.match(tag):
            raise LocalProtocolError(f"{cls.__name__}.TYPE must match {TYPE_RE.pattern}")
        if type(cls.VERSION) is not int or not 1 <= cls.VERSION <= 0xFFFF:
            raise LocalProtocolError(f"{cls.__name__}.VERSION must be an int in 1..65535")
        key = (tag, cls.VERSION)
        known = self._schemas.get(key)
        # The same class defined again (a module re-imported in tests) replaces itself.
        same_name = known is not None and (known.cls.__module__, known.cls.__qualname__) == (
            cls.__module__, cls.__qualname__)
        if known is not None and known.cls is not cls and not same_name:
            raise LocalProtocolError(f"{tag} v{cls.VERSION} is already {known.cls.__name__}")
        hints = typing.get_type_hints(cls)
        checkers: dict[str, Checker] = {}
        required = set()
        for f in dataclasses.fields(cls):
            checkers[f.name] = _compile(hints[f.name], f"{cls.__name__}.{f.name}")
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.add(f.name)
        self._schemas[key] = _Schema(cls, checkers, frozenset(required))
        return cls

    def schema(self, tag: str, version: int) -> _Schema | None:
        return self._schemas.get((tag, version))

    def types(self) -> list[tuple[str, int]]:
        return sorted(self._schemas)


REGISTRY = MessageRegistry()


def message(cls: type[M]) -> type[M]:
    """Class decorator: register a wire message in the default registry."""
    return REGISTRY.register(cls)


# ---- encoding -----------------------------------------------------------------------


def encode_body(msg: Message, registry: MessageRegistry = REGISTRY) -> bytes:
    """The msgpack body of `msg` (no length prefix); LocalProtocolError if unregistered
    or if a field holds a value its annotation does not allow."""
    schema = registry.schema(type(msg).TYPE, type(msg).VERSION)
    if schema is None or schema.cls is not type(msg):
        raise LocalProtocolError(f"{type(msg).__name__} is not a registered message")
    fields = msg.fields()
    for name, check in schema.checkers.items():
        try:
            check(fields[name], f"{msg.TYPE}.{name}")
        except TypeError as exc:
            raise LocalProtocolError(str(exc)) from None
    packed: bytes = msgpack.packb([msg.TYPE, msg.VERSION, fields], use_bin_type=True)
    return packed


def encode_frame(
    msg: Message, *, registry: MessageRegistry = REGISTRY, max_frame_size: int = MAX_FRAME_SIZE
) -> bytes:
    """Length prefix + body. A body over `max_frame_size` is our bug: LocalProtocolError."""
    body = encode_body(msg, registry)
    if len(body) > max_frame_size:
        raise LocalProtocolError(
            f"{msg.TYPE} frame is {len(body)} bytes, over the {max_frame_size}-byte limit"
        )
    return LENGTH_PREFIX.pack(len(body)) + body


def decode_body(body: bytes, registry: MessageRegistry = REGISTRY) -> Message:
    """Parse and check one frame body. Every failure is RemoteProtocolError."""
    if len(body) < MIN_BODY_SIZE:
        raise RemoteProtocolError(f"frame body of {len(body)} bytes is too short")
    try:
        parsed = unpack_bounded(body, max_str_len=len(body), max_bin_len=len(body),
                                max_container_len=MAX_CONTAINER_LEN)
    except DecodeError as exc:
        raise RemoteProtocolError(f"{exc!s:.200} (in a frame)") from None
    if not isinstance(parsed, list) or len(parsed) != 3:
        raise RemoteProtocolError("frame body is not a [type, version, fields] array")
    tag, version, fields = parsed
    if type(tag) is not str or len(tag) > MAX_TYPE_LEN or type(version) is not int:
        raise RemoteProtocolError("frame type tag or version has the wrong type")
    if not isinstance(fields, dict):
        raise RemoteProtocolError(f"{tag}: fields are not a map")
    schema = registry.schema(tag, version)
    if schema is None:
        raise RemoteProtocolError(f"unknown message type {tag!r} version {version}")
    unknown = fields.keys() - schema.checkers.keys()
    if unknown:
        raise RemoteProtocolError(f"{tag}: unknown fields {sorted(map(str, unknown))[:5]}")
    missing = schema.required - fields.keys()
    if missing:
        raise RemoteProtocolError(f"{tag}: missing fields {sorted(missing)}")
    try:
        values = {name: schema.checkers[name](v, f"{tag}.{name}") for name, v in fields.items()}
        return schema.cls(**values)
    except (TypeError, ValueError, OverflowError) as exc:
        # TypeError: wrong field type; ValueError (ValidationError): a record's own check.
        raise RemoteProtocolError(f"invalid {tag}: {exc!s:.300}") from None
    except RecursionError:
        raise RemoteProtocolError(f"invalid {tag}: nested too deeply") from None


# ---- incremental decoding -----------------------------------------------------------


class FrameDecoder:
    """Feed it bytes as they arrive; take whole messages out. Sans-I/O.

    After a RemoteProtocolError the decoder stays failed (every later call raises the
    same error): the byte stream has lost its framing and nothing after it can be trusted.
    """

    def __init__(
        self, *, registry: MessageRegistry = REGISTRY, max_frame_size: int = MAX_FRAME_SIZE
    ) -> None:
        if not 0 < max_frame_size <= MAX_FRAME_SIZE:
            raise LocalProtocolError(f"max_frame_size must be in 1..{MAX_FRAME_SIZE}")
        self._registry = registry
        self._max = max_frame_size
        self._buf = bytearray()
        self._error: RemoteProtocolError | None = None
        self._closed = False
        self.frames_decoded = 0
        self.bytes_received = 0

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buf)

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self._error = exc
        self._buf.clear()
        return exc

    def feed(self, data: bytes) -> None:
        """Append received bytes. Raises RemoteProtocolError as soon as a length prefix
        announces an oversize or empty frame (before buffering its body)."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise LocalProtocolError("feed() after close()")
        self._buf += data
        self.bytes_received += len(data)
        self._check_header()

    def _check_header(self) -> None:
        if len(self._buf) >= HEADER_SIZE:
            (length,) = LENGTH_PREFIX.unpack_from(self._buf)
            if length > self._max:
                raise self._fail(RemoteProtocolError(
                    f"frame of {length} bytes exceeds the {self._max}-byte limit"))
            if length < MIN_BODY_SIZE:
                raise self._fail(RemoteProtocolError(f"frame of {length} bytes is too short"))

    def next_message(self) -> Message | None:
        """The next whole message, or None until more bytes arrive."""
        if self._error is not None:
            raise self._error
        if len(self._buf) < HEADER_SIZE:
            return None
        (length,) = LENGTH_PREFIX.unpack_from(self._buf)
        end = HEADER_SIZE + length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[HEADER_SIZE:end])
        del self._buf[:end]
        try:
            msg = decode_body(body, self._registry)
            self._check_header()
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        self.frames_decoded += 1
        return msg

    def __iter__(self) -> Iterator[Message]:
        while (msg := self.next_message()) is not None:
            yield msg

    def close(self) -> None:
        """The stream ended. A partial frame left over means the peer cut us off
        mid-frame: RemoteProtocolError('truncated')."""
        if self._error is not None:
            raise self._error
        self._closed = True
        if self._buf:
            raise self._fail(RemoteProtocolError(
                f"stream ended inside a frame ({len(self._buf)} bytes buffered)"))


def decode_frame(data: bytes, *, registry: MessageRegistry = REGISTRY,
                 max_frame_size: int = MAX_FRAME_SIZE) -> Message:
    """Decode exactly one complete frame (no more, no less)."""
    decoder = FrameDecoder(registry=registry, max_frame_size=max_frame_size)
    decoder.feed(data)
    msg = decoder.next_message()
    if msg is None:
        decoder.close()
        raise RemoteProtocolError("empty input: no frame")
    if decoder.buffered:
        raise RemoteProtocolError(f"{decoder.buffered} bytes after the frame")
    return msg
