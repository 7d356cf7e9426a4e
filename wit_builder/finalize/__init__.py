"""Stage 4, ``wit finalize``: stage 3's raw shards -> dedup, re-balance -> equal-count WebDataset shards.

    raw {shard}.parquet + .tar (either engine) ──► {shard:05d}.tar/.parquet, sizes.json, stats.json (last),
    DATASET.md, image_sizes.png, query_counts.png, accounting/rows/{raw}.parquet, accounting/query_counts.parquet

- options.py    the flags (one frozen dataclass, ``OPTIONS``) and their ranges
- inputs.py     what ``--raw``/``--decontaminate`` name, ``--out`` apart from the raw shards, the seed check
- trace.py      what lies behind the raw shards: plan.json -> pairs files -> match rule, stage 2's seed
- rules.py      every row's final status (pure): repeated uid, decontamination, exact/near duplicates, cap
- shards.py     final keys, shard names, equal-count sizes, reproducible tar bytes
- stats.py      the counts each row adds, counts -> stats.json, the accounting checks, summary, warnings
- dataset_card.py  DATASET.md and its plots from the stats; outputs.py  rerun clean-up, files written last
- gallery.py    OUT/gallery/: static HTML pages and thumbnails of a bounded, seeded sample (per query, dropped)
- rebuild.py    ``--uids``: a published uid list as the selection (pipeline.SelectListed), missing_uids.txt
- pipeline.py   the Beam graph (the only module here that imports Beam); command.py  the launcher's Stage

Every raw row ends in exactly one of ``schemas.finalize.FINAL_STATUSES``; the counts are data (each row counted
once by ``pipeline.py``'s DoFns, summed into ``OUT/_counts.json``), checked against the raw parquets' footers.

Decisions, by the module that makes them:

- ``wit_builder/download/raw_shards.py``: reading both engines' raw layout, img2dataset's ``failed_to_resize`` ->
  ``failed_to_decode``, a success whose image is missing, truncated in the tar or does not decode (every stored
  image is decoded, JPEG at 1/8 scale, even when the raw row carries hashes and sizes) -> ``failed_to_decode``
  (reason ``raw_image_unreadable``) naming tar and key; missing sha256/pHash computed from the stored (resized)
  bytes and counted in ``stats.json``'s ``hash_source_*`` counts.
- ``wit_builder/core/dedup.py``: near duplicates: ``d+1`` bands of the 64-bit pHash (pigeonhole: hashes within ``d``
  share a band), pairs compared only inside a bucket (numpy popcount for big buckets), each edge reported by its
  first shared band only; clusters by union-find; survivor = most original pixels, then smallest uid;
  decontamination uses the same banded index.
- ``schemas/finalize.py``: the row type between the steps (``RawRecord``, ``ImageLocation``), its ``final_row()`` =
  the ``FINAL_ROWS`` columns (checked at import); encoded by ``pipeline.RawRecordCoder``.
- ``rules.py``: repeated uid: a success stays before any failure, then the earliest (raw shard, row), the others
  ``duplicate``/``repeated_uid``; exact duplicates: the survivor key's smallest stays; near-duplicate bucket edges
  and marking; decontamination (``filtered``, naming the evaluation image and distance; an evaluation image that
  does not decode is bad input); a query's threshold over the cap, the over-cap decision and message; numbering
  survivors in (raw shard, row) order from prefix offsets, each raw shard's rows checked to be ``0..n-1`` exactly
  once (``AccountingError``).
- ``stats.py``: statistics: the counts each row adds (as read: ``rows``, ``raw_status_*``; entering dedup:
  ``hash_source_*``; final: ``status_*``, ``reason_*``, ``size_*``), counted by the DoFns and summed as data; counts
  -> ``stats`` and stats.json's envelope; the accounting checks (rows read = rows with a final status = footers;
  shard sizes = the equal-count plan); the summary line; the warnings (monitoring counters that differ from the
  counts, unreadable raw images).
- ``options.py``: settings ranges, named by their flags.
- ``inputs.py`` (``resolve``, ``rebalance_seed``), traced by ``trace.py`` (``pairs_stats_behind``): what ``--raw``
  and ``--decontaminate`` name; ``--out`` never a raw shard's folder; **the seed check between stages 2 and 4**:
  with ``--per-query-cap``, the re-balance seed is the seed stage 2 balanced with (traced: raw folder's
  ``plan.json`` -> the pairs files -> their folder's ``stats.json``, stage ``build-pairs`` with a
  ``per_query_cap``): ``--seed`` left out takes it (0 when nothing is traced), a ``--seed`` that differs is exit 2
  naming the file and the seed to pass; pairs balanced with two seeds are refused; untraceable inputs are not
  checked.
- ``trace.py`` (``raw_match_rule``): the match rule behind the raw shards: one only (pairs of two rules never mix),
  recorded in stats.json ``details.match_rule``.
- ``wit_builder/core/balance.py``: re-balance: stage 2's rank (``wit_builder.core.uid.hash_rank``, uid as
  tie-break); a query's threshold is its cap-th smallest rank, from a bounded combiner; kept if any query keeps it;
  samples without queries are kept.
- ``rules.py`` (``prefix_offsets``, ``number_raw_shard``, ``shard_order``), wired by ``pipeline.WriteShards``:
  global order = (raw shard name, raw row): a final shard reads contiguous runs of one or two raw tars, never a few
  members from every tar; shuffling is the loader's job.
- ``shards.py``: keys = zero-padded global index (10 digits, no dots); shard ``i // samples_per_shard``; ustar tars
  with sorted members, mtime 2000-01-01, uid/gid 0, streamed (``w|``) and renamed into place.
- ``outputs.py``: a rerun first deletes the completion files (stats.json first) and killed writers' ``*.tmp-*``
  files; after the run the shards and accounting parquets of an earlier run that this run did not write go, then
  sizes.json, DATASET.md and stats.json (very last) are written: a killed rerun never looks complete.
- ``dataset_card.py``: the card and plots are pure functions of ``stats.json`` and the query counts.
- ``schemas/finalize.py``, ``schemas/sample.py``: tables: ``FINAL_ROWS`` (final shard rows and accounting rows),
  ``QUERY_COUNTS``, ``FINAL_STATUSES``; sample ``.json`` = ``SAMPLE_JSON_FIELDS``.
"""
