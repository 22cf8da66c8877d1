"""A small hostile HTTP(S) server on 127.0.0.1, configured per test.

Why our own and not the sandbox: the sandbox keeps the API contract; these tests need a server
that breaks it on purpose (compression bombs, trickled bodies, escape sequences, absurd headers,
oversized pages) and a listener that must receive nothing (a proxy, "another host"). Each test
passes a `respond(seen) -> Answer` function; every request is recorded in `requests`.

Loopback only, daemon threads, every loop bounded, and the server stops itself after
`lifetime` seconds even if a test forgets to.
"""

from __future__ import annotations

import gzip
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Answer:
    """What to send back. `trickle` sends the body one byte per that many seconds."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float | None = None


Respond = Callable[[Seen], Answer]


def json_answer(payload: object, status: int = 200, **headers: str) -> Answer:
    return Answer(
        status, json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}
    )


def empty_page(_seen: Seen | None = None) -> Answer:
    return json_answer({"data": [], "meta": {"next_cursor": None, "total": 0, "page": 1}})


def gzip_bomb(decoded_bytes: int = 400 * 1024 * 1024) -> bytes:
    """A valid JSON envelope of `decoded_bytes` (mostly spaces), gzipped to about 1/1000."""
    out = bytearray()
    with gzip.GzipFile(fileobj=_Sink(out), mode="wb", compresslevel=9) as gz:
        gz.write(b'{"data": [')
        block = b" " * (1024 * 1024)
        for _ in range(decoded_bytes // len(block)):
            gz.write(block)
        gz.write(b"]}")
    return bytes(out)


class _Sink:
    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up mid-reply (a deadline, a size cap) is expected here, not news."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class HostileServer:
    """`with HostileServer(respond) as server:` … `server.base_url`, `server.requests`."""

    def __init__(
        self,
        respond: Respond = empty_page,
        *,
        tls: ssl.SSLContext | None = None,
        lifetime: float = 120,
    ) -> None:
        self.respond = respond
        self.requests: list[Seen] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    def start(self) -> HostileServer:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            self._timer.cancel()
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: tests read `requests`

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen = Seen(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
                )
                server._record(seen)
                answer = server.respond(seen)
                self.send_response(answer.status)
                headers = {"Content-Length": str(len(answer.body)), **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self._write(answer)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    self.close_connection = True

            def _write(self, answer: Answer) -> None:
                if answer.trickle is None:
                    self.wfile.write(answer.body)
                    return
                for i in range(len(answer.body)):  # bounded by the body and by stop()
                    if server.stopping.wait(answer.trickle):
                        return
                    self.wfile.write(answer.body[i : i + 1])
                    self.wfile.flush()

            do_GET = do_POST = _serve

        return Handler


@dataclass(frozen=True)
class SelfSigned:
    """A throwaway certificate for 127.0.0.1 and the files it lives in."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def self_signed(directory: Path) -> SelfSigned:
    """Made here, in the test: the `cryptography` package when installed, else `openssl`."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _with_cryptography(cert, key)
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError(
                "neither the cryptography package nor openssl is available"
            ) from None
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
    return SelfSigned(cert, key)


def _with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
