"""Started test servers by backend name; each value has a .stop() method (see servers.stop_all)."""

RUNNING: dict[str, object] = {}
