"""TLS for the tests: a self-signed certificate made at test time, the SSL
contexts of a server that presents it and of clients that trust it, and three
kinds of ``wss://`` client behind one small interface.

The certificate is for ``127.0.0.1`` (and ``localhost``), so clients connect to
``wss://127.0.0.1:port`` with full verification: nothing here turns checks off.
It is made with the ``cryptography`` package when it is installed, else with the
``openssl`` command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.util
import ipaddress
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import aiohttp
import websockets.asyncio.client
import websockets.exceptions
from yarl import URL

from .wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Raw,
    close_payload,
    handshake,
    parse_close,
    read_frame,
)

__all__ = [
    "CLIENT_KINDS",
    "MAKERS",
    "Certificate",
    "TLSClient",
    "available_makers",
    "connect_tls",
    "make_certificate",
    "open_tls_client",
]

HOST: Final = "127.0.0.1"

TIMEOUT: Final = 10
"""Seconds a client waits for the server before the test fails."""

MAKERS: Final = ("cryptography", "openssl")
"""The ways a certificate can be made, preferred first."""


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate and its private key, as PEM files."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for a server that presents this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """An SSL context for a client that trusts this certificate (and only it)."""
        return ssl.create_default_context(cafile=str(self.cert))


def available_makers() -> list[str]:
    """The entries of :data:`MAKERS` usable on this machine."""
    found = {
        "cryptography": importlib.util.find_spec("cryptography") is not None,
        "openssl": shutil.which("openssl") is not None,
    }
    return [maker for maker in MAKERS if found[maker]]


def make_certificate(directory: Path, maker: str | None = None) -> Certificate:
    """Write a one-day self-signed certificate for 127.0.0.1 into ``directory``.

    Args:
        directory: an existing directory; ``cert.pem`` and ``key.pem`` go there.
        maker: one of :data:`MAKERS`; None takes the first available.

    Raises:
        RuntimeError: neither ``cryptography`` nor ``openssl`` is available.
    """
    if maker is None:
        makers = available_makers()
        if not makers:
            raise RuntimeError(
                "TLS tests need the cryptography package or the openssl command"
            )
        maker = makers[0]
    certificate = Certificate(directory / "cert.pem", directory / "key.pem")
    if maker == "cryptography":
        _make_with_cryptography(certificate)
    elif maker == "openssl":
        _make_with_openssl(certificate)
    else:
        raise ValueError(f"unknown certificate maker {maker!r}")
    return certificate


def _make_with_cryptography(certificate: Certificate) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address(HOST)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certificate.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _make_with_openssl(certificate: Certificate) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            f"subjectAltName=DNS:localhost,IP:{HOST}",
            "-keyout",
            str(certificate.key),
            "-out",
            str(certificate.cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


async def connect_tls(port: int, context: ssl.SSLContext, path: str = "/ws") -> Raw:
    """Open a TLS connection to 127.0.0.1 and complete a WebSocket handshake
    (asserts 101); the raw counterpart of :func:`tests.wire.connect`."""
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context)
    response = await handshake(reader, writer, path, host=HOST)
    if response.status != 101:
        writer.close()
        await writer.wait_closed()
        raise AssertionError(f"handshake answered {response.status}: {response.body!r}")
    return Raw(reader, writer, response)


CLIENT_KINDS: Final = ("raw", "aiohttp", "websockets")


class TLSClient(Protocol):
    """A ``wss://`` client that reads only when asked to (so it can fall behind)."""

    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""

    async def receive(self) -> str | bytes:
        """The next data message (answering pings meanwhile)."""

    async def receive_close(self) -> int | None:
        """Wait for the server's Close; return its code (None: no code)."""

    async def close(self) -> int | None:
        """Send a Close with 1000; return the code of the server's answering Close."""


class _RawTLSClient:
    def __init__(self, raw: Raw) -> None:
        self.raw = raw

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.raw.send(OP_TEXT, message.encode())
        else:
            await self.raw.send(OP_BINARY, message)

    async def _frame(self) -> tuple[int, bytes]:
        while True:
            _, opcode, payload = await read_frame(self.raw.reader)
            if opcode == OP_PING:
                await self.raw.send(OP_PONG, payload)
            elif opcode != OP_PONG:
                return opcode, payload

    async def receive(self) -> str | bytes:
        async with asyncio.timeout(TIMEOUT):
            opcode, payload = await self._frame()
        assert opcode in (OP_TEXT, OP_BINARY), opcode
        return payload.decode() if opcode == OP_TEXT else payload

    async def receive_close(self) -> int | None:
        async with asyncio.timeout(TIMEOUT):
            while True:
                opcode, payload = await self._frame()
                if opcode == OP_CLOSE:
                    return parse_close(payload)[0]

    async def close(self) -> int | None:
        await self.raw.send(OP_CLOSE, close_payload(1000))
        return await self.receive_close()


class _AiohttpTLSClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_bytes(message)

    async def receive(self) -> str | bytes:
        msg = await self.ws.receive(timeout=TIMEOUT)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        data: str | bytes = msg.data
        return data

    async def receive_close(self) -> int | None:
        msg = await self.ws.receive(timeout=TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        code: int = msg.data
        return code

    async def close(self) -> int | None:
        async with asyncio.timeout(TIMEOUT):
            await self.ws.close()
        return self.ws.close_code


class _WebsocketsTLSClient:
    def __init__(self, ws: websockets.asyncio.client.ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: str | bytes) -> None:
        await self.ws.send(message)

    async def receive(self) -> str | bytes:
        async with asyncio.timeout(TIMEOUT):
            return await self.ws.recv()

    async def receive_close(self) -> int | None:
        try:
            async with asyncio.timeout(TIMEOUT):
                message = await self.ws.recv()
        except websockets.exceptions.ConnectionClosed as closed:
            return None if closed.rcvd is None else closed.rcvd.code
        raise AssertionError(f"a message instead of the Close: {message!r}")

    async def close(self) -> int | None:
        async with asyncio.timeout(TIMEOUT):
            await self.ws.close()
        return self.ws.close_code


@contextlib.asynccontextmanager
async def open_tls_client(
    kind: str, url: str, context: ssl.SSLContext
) -> AsyncIterator[TLSClient]:
    """Connect a client of ``kind`` (one of :data:`CLIENT_KINDS`) to ``url``
    (``wss://127.0.0.1:port/ws``), trusting what ``context`` trusts."""
    if kind == "raw":
        raw = await connect_tls(URL(url).port or 443, context)
        try:
            yield _RawTLSClient(raw)
        finally:
            await raw.close()
    elif kind == "aiohttp":
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, ssl=context, max_msg_size=0) as ws,
        ):
            yield _AiohttpTLSClient(ws)
    elif kind == "websockets":
        async with websockets.asyncio.client.connect(
            url, ssl=context, compression=None, max_size=None, ping_interval=None
        ) as ws:
            yield _WebsocketsTLSClient(ws)
    else:
        raise ValueError(f"unknown client kind {kind!r}")
