"""Sans-I/O protocol: frames, codecs, errors, tokens, addresses, session machines.

Imports no asyncio, sockets, database or clock (STYLE rule 1).
"""
