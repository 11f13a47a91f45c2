"""Measurements of tokenwire, on a small common layer.

``lab`` (the server process, CPU and memory) and ``stats`` (percentiles, tables) are the
layer; ``overhead``, ``chaos``, ``stuck``, ``autobahn`` and the Locust harness
(``locustfile``, ``runner``, ``report``) are the measurements. docs/bench.md describes each.
"""
