"""tokenwire clients (the full client API arrives with the client issue)."""
