"""The parts the hub is made of, one job each.

- :mod:`record`: what is known about one stream (:class:`StreamRecord`);
- :mod:`registry`: where records are kept and found, and which ids expired;
- :mod:`admission`: the caps a new stream must pass;
- :mod:`generation`: the one task that writes a stream's log;
- :mod:`subscription`: one reader's position in a log, and counting readers per stream;
- :mod:`retention`: finished streams kept oldest first, within the memory bounds;
- :mod:`sweeper`: abandoned streams cancelled, expired ones forgotten;
- :mod:`redis_registry`: the registry shared by processes, in Redis.

:mod:`server.hub` composes them. Each part imports ``record``, the interfaces it is
handed (``registry``, ``retention``) and the layers below (``events``, ``errors``,
``store``).
"""
