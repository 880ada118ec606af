# C declarations for the compiled twin of _hub.py (aiohttp_upgrade._hub_c).
