"""How the long-running processes (stream worker, gateway) run: their event loop and the
garbage collector's settings, chosen once for all of them."""
