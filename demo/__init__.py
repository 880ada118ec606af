"""A cookie-authenticated chat built on aiohttp-upgrade.

Run it with ``python -m aiohttp.web -H 127.0.0.1 -P 8080 demo.chat:init_app``
(``make demo`` does exactly that). The modules each have one job:

- :mod:`demo.config`: settings from environment variables, with safe defaults.
- :mod:`demo.auth`: HMAC-signed session tokens and the cookie that carries them.
- :mod:`demo.limits`: token buckets and the demo's limits and caps (pure).
- :mod:`demo.names`: name normalisation and the mixed-script check (pure).
- :mod:`demo.store`: SQLite on one worker thread, so the event loop never blocks.
- :mod:`demo.protocol`: the JSON message schema, parsed and validated (pure).
- :mod:`demo.models`: the ``User`` and ``ChatMessage`` records.
- :mod:`demo.cluster`: ``make demo-cluster``: Redis and several gunicorn workers.
- :mod:`demo.handler`: the WebSocket handler: rooms as topics, save then publish,
  who is here from the library's presence (``ws.track``, the ``presence`` hook).
- :mod:`demo.chat`: the HTTP routes, the WebSocket route and the app factory.
- :mod:`demo.existing_app`: aiohttp-upgrade added to an ordinary aiohttp app.
- :mod:`demo.screenshot`: regenerates ``docs/chat.png`` in headless Chromium.
"""
