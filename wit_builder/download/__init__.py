"""Stage 3, ``wit download``: fetch, check and resize the images of the pairs, one raw shard per url shard.

```
--pairs parquet(s) ─► inputs.plan_shards (footers + url column, cut by host_shards) ─► plan.json (raw_folder)
  ─► pipeline.Download: url shards ─► by host chain ─► worker.ShardWorker (a chain's shards one after another)
       native: shard.download_rows ─► fetch.Fetcher (netsafety, http_client, ratelimit, robots, tdmrep) ─► images
       img2dataset: img2dataset_engine ─► the same RawSamples
     ─► raw_shards: {shard}.tar, {shard}.parquet, {shard}_stats.json ─► counted by the frame (stats.shard_counts)
  ─► command.DownloadStage.finish: stats.json (stats.stats_document), summary line, exit 3 if nothing succeeded
settings: options (DownloadOptions > ImageConfig, FetchConfig); the --out folder: raw_folder; Beam: pipeline only
```

Decisions and rules, and where they live:

- ``options``: the settings, one frozen tree (``DownloadOptions`` holding ``ImageConfig`` and ``FetchConfig``, the
  ``images`` and ``network`` argument groups); each field carries its flag, so a settings error names it;
  stats.json's ``parameters`` name every setting by its flag.
- ``inputs`` (and ``core.table_checks.check_pairs_input``): a folder means its ``pairs-*.parquet`` (else its
  ``*.parquet``); every pairs file is checked before any work: a ``url`` column once as text, ``uid``,
  ``caption`` (string), ``queries``, ``matched_queries`` (list<string>) when present, each once; a raw download
  folder given as ``--pairs`` is refused; a violation is one line naming the file (exit 2). Shards are planned
  from footers and the url column (about 20 µs and 16 bytes per row at the launcher); a worker reads a shard's
  rows from only the row groups that hold them (``plan.row_group_selection``).
- ``host_shards``: a host's rows go to one chain of shards run one after another by one worker, hosts that fit
  are packed whole into shards; rows of one normalized URL are kept adjacent.
- ``plan``: the url shards as (file, row) members (``ShardSpec``); plan.json's settings (speed-only settings
  left out, named as the engines read them) and the refusal of a rerun cut differently or made with other
  settings, naming what differs (``output_settings``, ``plan_differences``, ``plan_conflict``).
- ``retry`` (``--retry-failed``, used by ``worker``): in complete shards, the rows whose stored failure is
  transient (timeout, connection, DNS, 429/408/425, 5xx; ``--retry-reasons``) are fetched again through the same
  fetcher and the shard rewritten by the same writer, earlier successes byte for byte; permanent failures never.
- ``raw_folder``: complete shards (all three files) are skipped; a folder made with another plan, or holding
  shards without a plan.json, is refused unless ``--overwrite`` deletes the earlier run; a rerun that downloads
  nothing keeps stats.json when only its timings would change.
- ``worker`` and ``pipeline``: one worker per process for the picklable per-chain DoFn (``Fetcher`` built once,
  in ``setup``); a chain's shards one after another, the URL at a shard boundary handed to the next shard; each
  file temp-then-rename, the shard's stats last. ``pipeline`` is the only module of the stage importing Beam.
- ``stats`` (counted by ``pipeline``, used by ``command``): every shard of the plan, downloaded now or complete
  from an earlier run, is counted by the frame from its ``{shard}_stats.json`` (``shard_counts``) and its top
  errors are summed per kind; stats.json, the summary and the nothing-succeeded report (exit 3) are computed
  from those counts.
- ``shard``: threads, not asyncio (requests and Pillow block but release the GIL); rows submitted round-robin
  over hosts; results in row order; one fetch per distinct normalized URL, its result given to every row that
  shares it.
- ``fetch``: redirects followed by hand, each hop checked (scheme, robots.txt, tdmrep.json, address; a
  ``Location`` that is not UTF-8 or has control characters fails the row with a reason), a redirect's body never
  read; a total deadline per attempt, started when the host slot opens, bounding every wait (connect, status
  line, headers, body) through a watchdog that shuts the socket down at the deadline, and not retried when hit;
  every body (images, robots.txt, tdmrep.json) capped in raw and in decoded bytes; ``X-Robots-Tag`` and
  ``tdm-reservation`` headers before the body; a blocked row names its reason (``raw_shards.BLOCK_REASONS``);
  retries only for DNS/timeouts/408/429/5xx, with full-jitter backoff >= ``Retry-After`` (capped by
  ``--backoff-max``).
- ``netsafety``, ``http_client``: the address policy checked at connect time on the address actually used
  (urllib3 connection subclass + DNS cache), so a redirect or DNS rebinding cannot reach 169.254.169.254;
  proxies from the environment ignored.
- ``ratelimit``: per-host concurrency and rate caps, a host-wide pause on ``Retry-After``, and AIMD spacing of
  request starts (the measured rate halved on a 429/503, at most once a second; shrunk 7% per success), so a
  worker settles at the rate a throttling host accepts.
- ``robots``: robots.txt once per origin (``OriginCache``), its bytes decoded with BOM sniffing (UTF-8, UTF-16),
  parsed by protego per RFC 9309 (wildcards, ``$``, longest match, Allow wins ties, group by our token, first
  500 KiB cut at a whole line); 4xx = allowed, 5xx/unreachable/over the deadline = disallowed; its fetch has the
  row deadline, and rows waiting for it wait at most one deadline. ``X-Robots-Tag`` rules, scopes and dates.
- ``tdmrep``: TDMRep (W3C CG report): ``/.well-known/tdmrep.json`` per origin with robots.txt's cache and
  deadline (first matching ``location`` decides; unreadable = no reservation) and the ``tdm-reservation``
  header; ``--no-tdmrep`` turns it off.
- ``images``: decode checks, bombs and over-large outputs refused from header dimensions, a process-wide memory
  budget, EXIF orientation, mode handling, JPEG draft, resize modes, re-encode, pHash.
- ``raw_shards``: deterministic tar (mtime 0, uid/gid 0, key order) and parquet, no timings stored (they go to
  the log); read back by stage 4 for either engine.
- ``img2dataset_engine``: img2dataset as a drop-in engine, its statuses mapped by
  ``schemas.download.RAW_STATUS_ALIASES``.
"""
