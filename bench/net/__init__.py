"""The network lab (``tokenwire bench --net``, docs/network.md): tokenwire through real
intermediaries (nginx, haproxy, caddy), TLS, HTTP/2 and HTTP/3, and shaped links."""
