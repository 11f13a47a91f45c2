"""One thin adapter per transport: each moves bytes between the stream log and a socket."""
