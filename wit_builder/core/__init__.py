"""What two stages or more (or the trainer) share; imports neither Beam nor torch.

- ``errors``: exit codes; ``WitError`` (base of every error of ours), ``UsageError``, ``InputError``,
  ``StageFailed``; how an error of ours is recognised in a runner's text.
- ``options``: flags, defaults and ``--help`` generated from a command's frozen options dataclass (nested
  dataclasses are argument groups); settings errors named by flag; ``--out`` checks.
- ``progress``: the progress bar or periodic lines, and the one summary-line format.
- ``textnorm``: tokenization and normalization of queries (stage 1) and captions (stage 2); the token-boundary
  match.
- ``segment``: ``textnorm`` plus word segmentation of the scripts written without spaces (ICU), for every
  language; ``segmenter_id`` names it with versions.
- ``uid``: a pair's uid (stage 2) and host keys (stage 3).
- ``balance``: the seeded rank behind stage 2's per-query cap and stage 4's and the trainer's re-balance.
- ``dedup``: sha256 and pHash of images (stages 3 and 4).
- ``tar_writer``: reproducible tar members (raw shards of stage 3, final shards of stage 4).
- ``table_checks``: column checks of an input table before any work (stages 2 and 3).
- ``verdicts``: ``Drop(reason)``, a rule's verdict that a record leaves its stage (counted by ``wit_builder.beam``).
"""
