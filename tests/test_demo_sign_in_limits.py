"""The sign-in limit per client address, over real sockets: an IPv6 client is
limited on its /64, and an IPv4 client the same whether it arrives over IPv4 or
as an IPv4-mapped IPv6 address."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from demo.chat import create_app
from demo.limits import Limits

from .demo_support import Client, make_config

# Stands in for a trusted proxy's forwarded address (aiohttp-remotes does the
# same with X-Forwarded-For): lets one loopback test speak for other addresses.
CLIENT_ADDRESS = "X-Test-Client-Address"


def can_bind(family: socket.AddressFamily, address: str) -> bool:
    try:
        with socket.socket(family) as sock:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((address, 0))
    except OSError:
        return False
    return True


needs_ipv6_loopback = pytest.mark.skipif(
    not can_bind(socket.AF_INET6, "::1"), reason="cannot bind the IPv6 loopback ::1"
)
needs_mapped_loopback = pytest.mark.skipif(
    not can_bind(socket.AF_INET6, "::ffff:127.0.0.1"),
    reason="cannot bind an IPv6 socket to the IPv4-mapped loopback",
)


@web.middleware
async def forwarded_address(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    address = request.headers.get(CLIENT_ADDRESS)
    if address is not None:
        request = request.clone(remote=address)
    return await handler(request)


def chat_app(tmp_path: Path, burst: int) -> web.Application:
    limits = Limits(sign_in_burst=burst, sign_in_rate=0.01)
    app = create_app(make_config(tmp_path, limits=limits))
    app.middlewares.append(forwarded_address)
    return app


async def sign_in_status(
    client: Client | aiohttp.ClientSession, url: str, name: str, **headers: str
) -> int:
    async with client.post(
        url, data={"name": name}, headers=headers, allow_redirects=False
    ) as response:
        return response.status


@needs_ipv6_loopback
async def test_ipv6_client_is_limited_on_its_64(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Once ::1 has spent its sign-ins, another address of ::/64 gets 429 too."""
    client = await aiohttp_client(
        chat_app(tmp_path, burst=2), server_kwargs={"host": "::1"}
    )
    assert [await sign_in_status(client, "/sign-in", f"u{n}") for n in range(2)] == [
        303,
        303,
    ]
    neighbour = {CLIENT_ADDRESS: "::2:3:4"}
    assert await sign_in_status(client, "/sign-in", "u2", **neighbour) == 429


@needs_ipv6_loopback
async def test_other_64_is_not_limited(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """An address outside the spent /64 still signs in."""
    client = await aiohttp_client(
        chat_app(tmp_path, burst=1), server_kwargs={"host": "::1"}
    )
    assert await sign_in_status(client, "/sign-in", "u0") == 303
    elsewhere = {CLIENT_ADDRESS: "2001:db8::1"}
    assert await sign_in_status(client, "/sign-in", "u1", **elsewhere) == 303


@needs_mapped_loopback
async def test_mapped_ipv4_shares_the_ipv4_bucket(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """127.0.0.1 arriving as ::ffff:127.0.0.1 spends the same bucket as over IPv4."""
    client = await aiohttp_client(chat_app(tmp_path, burst=2))
    sock = socket.socket(socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::ffff:127.0.0.1", 0))
    runner = client.server.runner
    assert runner is not None
    mapped_site = web.SockSite(runner, sock)
    await mapped_site.start()
    mapped_url = f"http://127.0.0.1:{sock.getsockname()[1]}/sign-in"
    assert [await sign_in_status(client, "/sign-in", f"u{n}") for n in range(2)] == [
        303,
        303,
    ]
    async with aiohttp.ClientSession() as session:
        assert await sign_in_status(session, mapped_url, "u2") == 429
