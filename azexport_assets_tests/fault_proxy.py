"""A fault-injecting HTTP proxy in front of Azurite, for tests.

    with FaultProxy(target_port=azurite.port) as proxy:
        proxy.fail(method="PUT", comp="block", status=503, times=2)      # first 2 Put Block fail
        proxy.fail(method="PUT", comp="blocklist", status=500)           # every commit fails
        proxy.fail(path_contains="_updated", status=500)                 # one blob name fails
        proxy.drop_connection(comp="blocklist", after_forward=True)      # commit lands, reply lost
        proxy.delay(seconds=3, comp="blocklist", times=1)                # held before forwarding
        proxy.delay(seconds=3, comp="block", before="response")          # applied, answer late
        ...  # point an ExportBlobStorage at proxy.account_url
        proxy.requests   # [(method, path, query without SAS fields), ...] as seen, in order
        proxy.headers    # parallel to `requests`: each request's x-ms-* and Content-MD5 headers
        proxy.clear()    # forget rules and the request log

Rules are checked in the order they were added; `times=None` means "every matching request".
Delay rules wait and then let later rules (or forwarding) decide; the first matching fail/drop
rule ends the request. `comp="block"` matches the query field exactly (so it does not match
`comp=blocklist`); `query_contains` is a plain substring of the raw query.

It listens on 127.0.0.1 only (a free port), forwards to 127.0.0.1:<target_port>, streams bodies
both ways (Content-Length and chunked), keeps client connections alive like Azure does, opens a
fresh upstream connection per request (Azurite closes idle ones), and never logs or records SAS
signatures. `stop()` (or leaving the `with`) closes every connection and joins every thread.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

ACCOUNT = "devstoreaccount1"
CHUNK = 64 * 1024
# Headers that describe one hop, not the message (RFC 9110 7.6.1): never forwarded as-is.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
SAS_FIELDS = frozenset({"sig", "se", "st", "sp", "sv", "sr", "spr", "sip", "si", "ss", "srt"})
ERROR_CODES = {
    400: "InvalidInput",
    403: "AuthorizationFailure",
    404: "ResourceNotFound",
    408: "OperationTimedOut",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServerBusy",
    504: "GatewayTimeout",
}


class ProxiedRequest(NamedTuple):
    """One request as the proxy saw it; `query` has the SAS fields removed."""

    method: str
    path: str
    query: str


@dataclass
class Rule:
    kind: Literal["fail", "drop", "delay"]
    method: str | None = None
    path_contains: str | None = None
    query_contains: str | None = None
    comp: str | None = None
    times: int | None = None  # remaining matches; None = unlimited
    status: int = 503
    error_code: str | None = None
    seconds: float = 0.0
    before: Literal["request", "response"] = "request"
    after_forward: bool = False
    hits: int = 0

    def matches(self, method: str, path: str, query: str, fields: dict[str, str]) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method and self.method.upper() != method:
            return False
        if self.path_contains and self.path_contains not in unquote(path):
            return False
        if self.query_contains and self.query_contains not in query:
            return False
        return not (self.comp is not None and fields.get("comp") != self.comp)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins handler threads: nothing outlives the proxy
    allow_reuse_address = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Azure
    timeout = 30  # idle keep-alive connections end after this
    server: _Server

    # The default writes every request line (with the SAS signature) to stderr.
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, add=False)

    def _any(self) -> None:
        self.server.proxy._serve(self)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = _any


class FaultProxy:
    """A loopback HTTP proxy to Azurite that injects failures by rule (see the module doc)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("FaultProxy only forwards to loopback (tests only)")
        self.target = (target_host, target_port)
        self.requests: list[ProxiedRequest] = []
        self.outcomes: list[str] = []  # parallel to `requests`: 'forwarded 201', 'fail 503', ...
        # Parallel to `requests`: the x-ms-* and Content-MD5 headers, lower-case names (no
        # Authorization: it carries secrets).
        self.headers: list[dict[str, str]] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def start(self) -> FaultProxy:
        if not self._started:
            self._thread.start()
            self._started = True
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed requests
        if self._started:
            self._server.shutdown()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:  # idle keep-alive handlers are blocked reading: wake them
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the handler threads
        if self._started:
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ rules

    def fail(
        self,
        *,
        status: int = 503,
        times: int | None = 1,
        method: str | None = None,
        path_contains: str | None = None,
        query_contains: str | None = None,
        comp: str | None = None,
        error_code: str | None = None,
    ) -> Rule:
        """Answer matching requests with `status` and an Azure-style XML error (body drained)."""
        return self._add(
            Rule(
                "fail",
                method=method,
                path_contains=path_contains,
                query_contains=query_contains,
                comp=comp,
                times=times,
                status=status,
                error_code=error_code or ERROR_CODES.get(status, "InjectedFault"),
            )
        )

    def drop_connection(
        self,
        *,
        times: int | None = 1,
        after_forward: bool = False,
        method: str | None = None,
        path_contains: str | None = None,
        query_contains: str | None = None,
        comp: str | None = None,
    ) -> Rule:
        """Reset the client connection (TCP RST) without an answer. With `after_forward`, the
        request first reaches Azurite (it takes effect) and only the response is lost."""
        return self._add(
            Rule(
                "drop",
                method=method,
                path_contains=path_contains,
                query_contains=query_contains,
                comp=comp,
                times=times,
                after_forward=after_forward,
            )
        )

    def delay(
        self,
        *,
        seconds: float,
        times: int | None = 1,
        method: str | None = None,
        path_contains: str | None = None,
        query_contains: str | None = None,
        comp: str | None = None,
        before: Literal["request", "response"] = "request",
    ) -> Rule:
        """Hold matching requests for `seconds`: before they are read and forwarded (a stalled
        service: nothing happens meanwhile), or with `before="response"` after the service has
        acted, before its answer is relayed (a slow answer: client read timeouts)."""
        return self._add(
            Rule(
                "delay",
                before=before,
                method=method,
                path_contains=path_contains,
                query_contains=query_contains,
                comp=comp,
                times=times,
                seconds=seconds,
            )
        )

    def clear(self) -> None:
        """Forget all rules and the request log."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()
            self.outcomes.clear()
            self.headers.clear()

    def count(
        self, *, method: str | None = None, comp: str | None = None, path_contains: str = ""
    ) -> int:
        """How many requests were seen that match (e.g. `count(method="PUT", comp="block")`)."""
        with self._lock:
            seen = list(self.requests)
        return sum(
            1
            for r in seen
            if (method is None or r.method == method)
            and (comp is None or dict(parse_qsl(r.query)).get("comp") == comp)
            and path_contains in unquote(r.path)
        )

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        """Poll `predicate(proxy)` until true (returns True) or `timeout` (returns False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.01)
        return False

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _take(self, kind_filter: tuple[str, ...], *match_args) -> list[Rule]:
        """Matching rules, consuming one use of each; delays first, then at most one fail/drop."""
        taken: list[Rule] = []
        with self._lock:
            for rule in self._rules:
                if rule.kind in kind_filter and rule.matches(*match_args):
                    if rule.times is not None:
                        rule.times -= 1
                    rule.hits += 1
                    taken.append(rule)
                    if rule.kind != "delay":
                        break
        return taken

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)

    # ------------------------------------------------------------------ serving

    def _serve(self, handler: _Handler) -> None:
        method = handler.command
        split = urlsplit(handler.path)
        fields = dict(parse_qsl(split.query, keep_blank_values=True))
        clean_query = urlencode([(k, v) for k, v in fields.items() if k not in SAS_FIELDS])
        with self._lock:
            self.requests.append(ProxiedRequest(method, split.path, clean_query))
            index = len(self.requests) - 1
            self.outcomes.append("")
            self.headers.append(
                {
                    k.lower(): v
                    for k, v in handler.headers.items()
                    if (k.lower().startswith("x-ms-") or k.lower() == "content-md5")
                    and k.lower() != "x-ms-copy-source-authorization"
                }
            )

        def outcome(text: str) -> None:
            with self._lock:
                if index < len(self.outcomes):
                    self.outcomes[index] = text

        rules = self._take(("delay", "fail", "drop"), method, split.path, split.query, fields)
        for rule in rules:
            waits = rule.kind == "delay" and rule.before == "request"
            if waits and self._stopping.wait(rule.seconds):  # True: the proxy is stopping
                handler.close_connection = True
                return
        late = sum(r.seconds for r in rules if r.kind == "delay" and r.before == "response")
        action = next((r for r in rules if r.kind != "delay"), None)
        if action is not None and action.kind == "fail":
            _drain_body(handler)
            _send_error(handler, action.status, action.error_code or "InjectedFault")
            outcome(f"fail {action.status}")
            return
        if action is not None and action.kind == "drop" and not action.after_forward:
            _reset(handler)
            outcome("drop")
            return
        try:
            status = self._forward(handler, method, deliver=action is None, late=late)
        except (OSError, http.client.HTTPException) as error:
            handler.close_connection = True
            outcome(f"upstream error {type(error).__name__}")
            with contextlib.suppress(OSError):
                _send_error(handler, 502, "BadGateway")
            return
        if action is not None:  # drop after forward: the service acted, the client never hears
            _reset(handler)
            outcome(f"drop after {status}")
        else:
            outcome(f"forwarded {status}")

    def _forward(self, handler: _Handler, method: str, *, deliver: bool, late: float) -> int:
        upstream = http.client.HTTPConnection(*self.target, timeout=60)
        try:
            upstream.putrequest(method, handler.path, skip_host=True, skip_accept_encoding=True)
            chunked = "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
            for name, value in handler.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            for piece in _body_pieces(handler):
                upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                upstream.send(b"0\r\n\r\n")

            response = upstream.getresponse()
            if late and self._stopping.wait(late):
                raise ConnectionAbortedError("proxy stopping")
            if not deliver:
                response.read()
                return response.status
            handler.send_response_only(response.status, response.reason)
            length = response.getheader("Content-Length")
            no_body = method == "HEAD" or response.status in (204, 304) or response.status < 200
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    handler.send_header(name, value)
            if length is None and not no_body:
                handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            if not no_body:
                while piece := response.read(CHUNK):
                    handler.wfile.write(
                        piece if length is not None else b"%x\r\n%s\r\n" % (len(piece), piece)
                    )
                if length is None:
                    handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
            return response.status
        finally:
            upstream.close()


def _body_pieces(handler: BaseHTTPRequestHandler):
    """The request body, streamed in pieces (Content-Length or chunked; trailers dropped)."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        while True:
            size_line = handler.rfile.readline(1024)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            remaining = size
            while remaining:
                piece = handler.rfile.read(min(CHUNK, remaining))
                if not piece:
                    raise ConnectionError("client closed mid-body")
                remaining -= len(piece)
                yield piece
            handler.rfile.readline(16)  # CRLF after the chunk
    else:
        remaining = int(handler.headers.get("Content-Length") or 0)
        while remaining:
            piece = handler.rfile.read(min(CHUNK, remaining))
            if not piece:
                raise ConnectionError("client closed mid-body")
            remaining -= len(piece)
            yield piece


def _drain_body(handler: BaseHTTPRequestHandler) -> None:
    for _ in _body_pieces(handler):
        pass


def _send_error(handler: BaseHTTPRequestHandler, status: int, code: str) -> None:
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{code}</Code><Message>Injected by FaultProxy.</Message></Error>"
    ).encode()
    handler.send_response_only(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("x-ms-error-code", code)
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), like a network failure."""
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()


class TcpFaultProxy:
    """A loopback TCP relay (e.g. in front of Postgres) whose connections a test can cut.

        with TcpFaultProxy(target_port=postgres.port) as relay:
            ...  # connect to 127.0.0.1:relay.port
            relay.cut()              # reset every open connection (a network failure)
            relay.cut(refuse=2)      # ... and also reset the next 2 new connections at once

    Bytes are relayed unchanged both ways; `connections` counts the connections accepted.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("TcpFaultProxy only forwards to loopback (tests only)")
        self.target = (target_host, target_port)
        self.connections = 0
        self.cuts = 0  # connections reset by cut() or refused
        self._refuse = 0
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def start(self) -> TcpFaultProxy:
        self._acceptor.start()
        return self

    def __enter__(self) -> TcpFaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self.cut()
        self._acceptor.join(timeout=10)
        self._listener.close()
        for thread in list(self._threads):
            thread.join(timeout=10)

    def cut(self, refuse: int = 0) -> int:
        """Reset (TCP RST) every relayed connection, and the next `refuse` new ones; returns
        how many open connections were cut."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
            self._refuse = refuse
            self.cuts += len(pairs)
        for pair in pairs:
            for sock in pair:
                _abort(sock)
        return len(pairs)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                refused = self._refuse > 0
                if refused:
                    self._refuse -= 1
                    self.cuts += 1
            if refused:
                _abort(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _abort(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(pair, source, sink), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, pair, source: socket.socket, sink: socket.socket) -> None:
        try:
            while piece := source.recv(CHUNK):
                sink.sendall(piece)
        except OSError:
            pass
        with self._lock:
            known = pair in self._pairs
            self._pairs.discard(pair)
        if known:  # an orderly close by one side: close both
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


def _abort(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), like a network failure.

    The shutdown first wakes a pump thread blocked in `recv` on this socket: while one is, a
    bare close() does not release the connection (the blocked call keeps it referenced), so
    no RST would be sent and the peer would wait for ever instead of seeing the failure."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
