"""The ``tokenwire`` command: the one layer that knows the server, the clients and the bench."""
