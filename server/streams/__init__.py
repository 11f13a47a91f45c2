"""The parts the hub is made of, one job each.

- :mod:`record`: what is known about one stream (:class:`StreamRecord`);
- :mod:`registry`: where records are kept and found, and which ids expired;
- :mod:`admission`: the caps a new stream must pass;
- :mod:`generation`: the one task that writes a stream's log;
- :mod:`subscription`: one reader's position in a log, and counting readers per stream;
- :mod:`sweeper`: abandoned streams cancelled, expired ones forgotten.

:mod:`server.hub` composes them. Each part imports only ``record`` and the layers below
(``events``, ``errors``, ``store``); none imports another part.
"""
