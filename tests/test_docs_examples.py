"""The flow-control example of the docs (``examples/producer.py``) works as described."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import WSMsgType
from pytest_aiohttp import AiohttpServer

from .examples_support import load_example

CHUNKS = 256  # 16 MiB: more than loopback's socket buffers hold


async def test_producer_delivers_every_chunk_in_order_pumping_from_drain(
    aiohttp_server: AiohttpServer,
    client_session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every chunk arrives once and in order, and the producer waited for drain."""
    producer = load_example("producer", monkeypatch)
    server = await aiohttp_server(producer.create_app())
    url = server.make_url("/download").with_query(chunks=CHUNKS)
    async with client_session.ws_connect(url, max_msg_size=0) as ws:
        for index in range(CHUNKS):
            assert await ws.receive_bytes(timeout=10) == producer.chunk(index)
        close = await ws.receive(timeout=10)
    assert close.type == WSMsgType.CLOSE
    assert close.data == 1000
    reason = close.extra
    assert isinstance(reason, str)
    assert int(reason.split()[-2]) > 0, reason


@pytest.mark.parametrize("chunks", ["0", "1025", "many"], ids=["zero", "over", "nan"])
async def test_producer_refuses_a_bad_chunk_count(
    aiohttp_server: AiohttpServer,
    client_session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    chunks: str,
) -> None:
    """A chunk count out of range or not a number gets 400 and no upgrade."""
    producer = load_example("producer", monkeypatch)
    server = await aiohttp_server(producer.create_app())
    url = server.make_url("/download").with_query(chunks=chunks)
    with pytest.raises(aiohttp.WSServerHandshakeError) as error:
        await client_session.ws_connect(url)
    assert error.value.status == 400
