"""The Beam plumbing every stage shares: files through ``FileSystems`` (``fileio``), the launch sequence
(``launcher``), counts as data (``counting``) and large intermediate data as files (``spill``). The only place
besides a stage's ``pipeline.py`` that imports Beam. No eager imports: a worker imports what a stage's pipeline
module imports, nothing more."""
