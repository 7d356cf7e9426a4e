"""Stage 3, downloading: the native engine (fetch, per-host limits, robots.txt, address policy, image
processing), the img2dataset engine, and the raw shards both write and stage 4 reads."""
