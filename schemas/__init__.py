"""The one definition of every table and record the project reads or writes.

Each stage's tables live in their own module (``schemas.queries``, ``schemas.pairs``, ...); import them
from there wherever a table is read or written.
"""
