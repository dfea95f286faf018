"""Commands: what the `peterrec` command line runs, one module per command, above the library.

Nothing in the library imports from here (a test checks the import direction).
"""
