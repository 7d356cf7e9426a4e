"""The command of this stage (being split out of pipeline.py)."""

from wit_builder.pairs.pipeline import OPTIONS, run  # noqa: F401
