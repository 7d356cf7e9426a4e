"""``wit demo``: the whole chain offline on bundled data, through the same commands a user types.

    enwiki sample (gensim) + WordNet ──► build-queries ──► OUT/queries
    corpus.py ──► OUT/corpus/www (served by server.py on 127.0.0.1) + pool.parquet
      ──► build-pairs ──► OUT/pairs ──► download (--allow-private-networks) ──► OUT/raw
      ──► finalize (--decontaminate heldout/) ──► OUT/shards ──► train (tiny, CPU) ──► eval ──► eval.json

- ``options.py``: the settings (``DemoOptions``); the fixed default port (18765): the port is part of every URL
  and so of every uid.
- ``corpus.py``: the corpus: real photos (scikit-image, scikit-learn) with crops and variants, drawn shapes,
  distractor captions, duplicate pairs, mirrored images, hostile URLs (404, link-local, HTML as JPEG, truncated
  JPEG, bomb, robots.txt-disallowed); a held-out zero-shot folder whose bytes never enter the pool; seeded,
  byte-identical.
- ``server.py``: the loopback server and its hostile behaviours.
- ``languages.py``: ``--languages en,ja``: Japanese queries (the shipped jawiki excerpt and the classes' WordNet
  lemmas in ``data/``), Japanese captions and real file-link captions in the pool, class names per language for
  zero-shot in each language; nothing of it runs for the default ``en``.
- ``command.py``: the chain, step reuse (each step records a fingerprint of its inputs and flags when it
  finishes; a rerun skips matching steps, resumes an interrupted one, restarts changed ones; ``--force`` reruns
  all) and the report.

Demo-only code lives here, outside the stage packages that Beam workers import.
"""
