"""The command of this stage (being split out of pipeline.py)."""

from wit_builder.download.pipeline import (  # noqa: F401
    EPILOG,  # noqa: F401
    OPTIONS,
    run,
)
