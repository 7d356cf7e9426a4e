"""Stage 2's pool readers: one pool file in; for each record a ``Candidate`` (normalized url, cleaned caption,
file, offset) or a ``Rejection`` (reason, file, offset, detail). A bad record never ends a file.

  formats.py       the entry: a file's format (name, ``--pool-format``; content sniffed before work), then
                   ``check_pool_file``, ``read_pool_file`` (record by record), ``read_pool_batches`` (the stage)
  layouts.py       ``PoolOptions``: format, url/caption columns, header, URL limit; presets; per-input layouts
  records.py       ``Candidate``, ``Rejection`` and its reasons (FILTER_/BAD_REASONS), ``PoolFormatError``, offsets
  clean.py         the rule for one (url, caption), every format: resolve (``urljoin``), normalize, clean
  warc.py          WAT (``IMG@/src`` links of metadata records) and WARC (``<img>`` of HTML responses)
  warc_records.py  a WAT file's records (FastWARC): offsets, damaged gzip members reported and skipped
                   (WARC pages are read with warcio in warc.py)
  tables.py        parquet, jsonl, csv, tsv (record by record) and their column checks before work
  columns.py       ``CandidateBatch``: the same answers in Arrow columns; parquet cleaned column-wise

Split by format family. The pair rule has a module of its own because every family applies it (and
``urljoin`` is part of it: a WAT/WARC link is resolved against its page before it is normalized). The
column-wise form is a family of its own: a second representation of the same answers for every format,
held equal to ``clean.judge`` by its tests.
"""
