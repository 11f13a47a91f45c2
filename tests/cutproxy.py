"""The cutting proxy lives in ``bench/cutproxy.py`` (the chaos bench uses it too; the bench
never imports ``tests/``); the tests import it from here."""

from bench.cutproxy import CutProxy

__all__ = ["CutProxy"]
