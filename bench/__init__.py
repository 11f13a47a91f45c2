"""Benchmarks: ``overhead.py`` (asyncio, unpaced) and the Locust harness (``locustfile.py``,
``runner.py``: ``tokenwire bench``)."""
