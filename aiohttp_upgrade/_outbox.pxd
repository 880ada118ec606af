# C declarations for the compiled twin of _outbox.py (aiohttp_upgrade._outbox_c).
