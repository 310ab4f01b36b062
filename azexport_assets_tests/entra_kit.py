"""A local stand-in for Microsoft Entra ID's token service, over HTTPS, for a real service
principal sign-in: azure-identity's ClientSecretCredential (MSAL underneath) discovers the
tenant's OpenID configuration here and asks for a token with the client credentials grant,
exactly as it does at login.microsoftonline.com.

    tls = SelfSignedTls.create(tmp_path)                  # one certificate for 127.0.0.1
    with EntraTokenService(tls, tenant, client, secret) as entra:
        entra.authority                                    # https://127.0.0.1:<port>
        entra.token_requests                               # what was asked for

Tokens are JWTs with the claims Azure Storage (and Azurite's `--oauth basic`) checks:
issuer `https://sts.windows.net/<tenant>/`, audience `https://storage.azure.com`, nbf/exp.
Azurite does not check the signature, so they are signed with a throw-away HMAC key.
A wrong client id or secret gets Entra's own answer: HTTP 401, `invalid_client`, AADSTS7000215.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

STORAGE_AUDIENCE = "https://storage.azure.com"


@dataclass(frozen=True)
class SelfSignedTls:
    """A self-signed certificate for 127.0.0.1 / localhost and its key (PEM files); the
    certificate is also the CA bundle clients trust (REQUESTS_CA_BUNDLE)."""

    cert: Path
    key: Path

    @classmethod
    def create(cls, folder: Path) -> SelfSignedTls:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.now(timezone.utc)
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / "tls-cert.pem", folder / "tls-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        return cls(cert=cert_path, key=key_path)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def storage_token(tenant: str, client: str, lifetime: int = 3600, audience: str = "") -> str:
    """An access token for Azure Storage as Entra ID issues one to an application."""
    now = int(time.time())
    claims = {
        "aud": audience or STORAGE_AUDIENCE,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": now,
        "nbf": now - 60,
        "exp": now + lifetime,
        "appid": client,
        "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, client)),
        "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, client)),
        "tid": tenant,
        "ver": "1.0",
    }
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    signature = hmac.new(secrets.token_bytes(32), signing_input.encode(), hashlib.sha256)
    return signing_input + "." + _b64(signature.digest())


@dataclass
class EntraTokenService:
    """The token service of one tenant with one application (see the module docstring)."""

    tls: SelfSignedTls
    tenant: str
    client_id: str
    client_secret: str = field(repr=False)
    audience: str = STORAGE_AUDIENCE  # what the tokens are for (a test may issue others)
    token_requests: list[dict[str, str]] = field(default_factory=list)  # secrets removed
    discovery_requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def authority(self) -> str:
        """What `authority_host` names: scheme, host and port."""
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> EntraTokenService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet test output
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == f"/{service.tenant}/v2.0/.well-known/openid-configuration":
                    service.discovery_requests.append(path)
                    base = f"{service.authority}/{service.tenant}"
                    self._json(
                        200,
                        {
                            "issuer": f"{base}/v2.0",
                            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                            "token_endpoint": f"{base}/oauth2/v2.0/token",
                            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                            "token_endpoint_auth_methods_supported": ["client_secret_post"],
                            "response_types_supported": ["code", "token"],
                        },
                    )
                    return
                self._json(404, {"error": "not_found", "error_description": path})

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if path != f"/{service.tenant}/oauth2/v2.0/token":
                    self._json(404, {"error": "not_found", "error_description": path})
                    return
                secret = form.pop("client_secret", "")
                service.token_requests.append(form)
                if (
                    form.get("grant_type") != "client_credentials"
                    or form.get("client_id") != service.client_id
                    or not hmac.compare_digest(secret, service.client_secret)
                ):
                    self._json(
                        401,
                        {
                            "error": "invalid_client",
                            "error_description": "AADSTS7000215: Invalid client secret "
                            f"provided. Ensure the secret being sent in the request is the "
                            f"client secret value, not the client secret ID, for a secret "
                            f"added to app '{form.get('client_id')}'.",
                            "error_codes": [7000215],
                        },
                    )
                    return
                self._json(
                    200,
                    {
                        "token_type": "Bearer",
                        "expires_in": 3599,
                        "ext_expires_in": 3599,
                        "access_token": storage_token(
                            service.tenant, service.client_id, audience=service.audience
                        ),
                    },
                )

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls.cert, self.tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
