"""Sans-I/O framing: events in, bytes out. No event loop and no aiohttp in here."""
