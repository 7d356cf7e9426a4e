"""The WIT builder: one package per stage, each with the same shape.

    queries/ (1) ──► pairs/ (2) ──► download/ (3) ──► finalize/ (4) ──► trainer/ (5, top-level package)

A stage package holds ``options.py`` (its frozen options dataclass), pure rule modules (no Beam),
``pipeline.py`` (the only module of the stage that imports Beam) and ``command.py`` (``run(options, beam_argv)``);
its ``__init__`` is its map. Below the stages: ``core/`` (no Beam, no torch) and ``beam/`` (files, the launcher,
counting). ``schemas/`` (top level) is the contract between stages. ``cli.py`` is the ``wit`` command; ``demo/``
runs the chain on bundled data. Package ``__init__`` files import nothing: a Beam worker imports a stage's
``pipeline.py`` and what it imports, nothing more.
"""
