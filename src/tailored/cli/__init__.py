"""Command line: thin parsers that call one library function and shape its output.

Every module here named ``*_cmd.py`` has ``register(subparsers)`` and is discovered by ``main.py``,
so a new command is a new file.
"""
