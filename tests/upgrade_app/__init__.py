"""Helper programs for the retry, upgrade and update tests (run as child processes or imported)."""
