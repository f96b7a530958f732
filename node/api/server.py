"""Serving the API on the daemon's own trio loop: hypercorn's trio worker.

`ApiServer.bind()` opens the listening socket before the daemon reports ready (so the
port is known, `listen = "127.0.0.1:0"` included, and `gd-node status` can print the
URL); `run()` serves it together with the job runner and the event watcher, as one
supervised service (node/supervise.py): if it fails it restarts on the same port.

TLS: with `tls_cert`/`tls_key`, the context accepts TLS 1.3 only (hypercorn's own
default allows 1.2); off loopback TLS is mandatory (node/api/settings.py).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Any, cast

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app

from gd.node.api.app import build_app
from gd.node.api.events import EventWatcher
from gd.node.api.openapi import build_openapi
from gd.node.api.routes import ALL_ROUTES
from gd.node.api.services import ApiServices
from gd.node.api.settings import ApiSettings

# A client that opens a connection and sends nothing is dropped after this long; idle
# keep-alive connections likewise (hypercorn's default is 5 s).
KEEP_ALIVE_S = 15.0
# Shutdown: in-flight requests get this long (the daemon's own grace is 10 s).
GRACEFUL_S = 3.0
BACKLOG = 128


class _Tls13Config(Config):
    """hypercorn's Config with a TLS 1.3-only context."""

    def create_ssl_context(self) -> ssl.SSLContext | None:
        context = super().create_ssl_context()
        if context is not None:
            context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context


class ApiServer:
    def __init__(self, daemon: Any, settings: ApiSettings) -> None:
        self.daemon = daemon
        self.settings = settings
        self.api = ApiServices(daemon, settings)
        self.app = build_app(self.api, ALL_ROUTES, build_openapi(ALL_ROUTES))
        self.config = _Tls13Config()
        self.config.keep_alive_timeout = KEEP_ALIVE_S
        self.config.graceful_timeout = GRACEFUL_S
        self.config.backlog = BACKLOG
        self.config.accesslog = None
        self.config.errorlog = None
        self.config.include_server_header = False
        if settings.tls:
            cert, key = settings.tls_paths(daemon.home.root)
            self.config.certfile, self.config.keyfile = str(cert), str(key)
            self.config.alpn_protocols = ["http/1.1"]
        self.sock: socket.socket | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host, _ = self.settings.host_port()
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.settings.tls else 'http'}://{shown}:{self.port}"

    def bind(self) -> int:
        """Open the listening socket (the same port again after a restart)."""
        host, port = self.settings.host_port()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, self.port if self.port is not None else port))
        except OSError:
            sock.close()
            raise
        sock.listen(BACKLOG)
        sock.setblocking(False)
        self.sock = sock
        self.port = sock.getsockname()[1]
        return self.port

    async def run(self) -> None:
        """Serve until cancelled, with the job runner and the event watcher."""
        if self.sock is None or self.sock.fileno() < 0:
            self.bind()
        assert self.sock is not None
        sockets = (Sockets([self.sock], [], []) if self.settings.tls
                   else Sockets([], [self.sock], []))
        self.sock = None  # hypercorn closes it when it stops; a restart binds again
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.api.runner.run)
                nursery.start_soon(EventWatcher(self.api).run)
                # Starlette is an ASGI app; its own Scope/Receive/Send aliases are not
                # hypercorn's, so the two libraries' annotations disagree.
                app = cast(ASGIFramework, self.app)
                await worker_serve(wrap_app(app, self.config.wsgi_max_body_size, "asgi"),
                                   self.config, sockets=sockets)
        finally:
            for sock in sockets.secure_sockets + sockets.insecure_sockets:
                with contextlib.suppress(OSError):
                    sock.close()


def check_api_config(settings: ApiSettings, home_root: Any) -> None:
    """Before the daemon starts anything: ConfigError for an exposed API without TLS."""
    from gd.node.api.settings import ApiSettingsError
    from gd.node.config import ConfigError

    try:
        settings.check_exposure(home_root)
    except ApiSettingsError as exc:
        raise ConfigError(str(exc)) from None


def start_api(daemon: Any) -> ApiServer | None:
    """The daemon's API server, bound (its URL in `daemon.api_url`), or None when
    `[api] enabled = false` or the daemon has no Cortex."""
    settings = daemon.cfg.api
    if not settings.enabled or daemon.cortex is None or daemon.sovereignty is None:
        return None
    server = ApiServer(daemon, settings)
    server.bind()
    daemon.api_url = server.url
    daemon.api = server.api
    return server
