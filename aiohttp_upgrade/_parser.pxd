# C declarations for the compiled twin of _parser.py (aiohttp_upgrade._parser_c).
