"""Web surfaces: the desk REST API (and, later, the console)."""
