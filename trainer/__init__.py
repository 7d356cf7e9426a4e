"""Stage 5: train CLIP on WebDataset shards (``wit train``), evaluate (``wit eval``) and export (``wit export``) it.
Plain PyTorch: no Beam here, and torch stays inside this package.

    shards ─► loader ─► model + loss ─► optimizer ─► checkpoints, logs        eval/: checkpoint ─► metrics JSON

    shards.py       --shards -> shard URLs, samples per shard (sizes.json | img2dataset _stats.json), match rule,
                    raw tar samples grouped by key; DataError (an InputError)
    balance.py      load-time per-query cap (--per-query-cap, --balance; per language: --language-caps), planned
                    from the shards' sample json
    data.py         DataPlan (what fixes the order of batches) -> per-stream readers -> Loader: batches, epochs,
                    the exact position to resume from, every epoch's accounting
    transforms.py   seeded random resized crop (uint8, torch), eval centre crop, CLIP's normalisation
    tokenizer.py    byte-level BPE (learnt from the captions or loaded, also a Hugging Face tokenizer.json), saved
                    inside every checkpoint
    languages.py    a sample's language (json ``lang``), XLM's smoothed BPE sample, tokens per caption and share cut
                    at the context per language (OUT/tokenizer_stats.json)
    config.py       ModelConfig + MODEL_CONFIGS (the paper's models, tiny), TrainConfig (wit train's options)
    model.py        CLIP: ViT or modified ResNet image tower, causal text tower; parameter groups
    loss.py         CLIP's symmetric cross-entropy and SigLIP's sigmoid loss over the global batch
    distributed.py  process group, rank/world/device, object gathers, votes and barriers (gloo), feature gathers
    checkpoint.py   one self-contained checkpoint file (atomic), RNG states, load_model
    run_log.py      metrics.jsonl, epochs.jsonl, TensorBoard, loss.png (rank 0)
    train.py        ``wit train``: setup, resume, tokenizer, model and optimizer, data, the loop, the end
    export.py       ``wit export``: open_clip state dict + model config + HF tokenizer
    eval/           ``wit eval``: zero-shot classification, retrieval, linear probes (see eval/__init__.py)

Decisions, and where they are made:

- ``ModelConfig`` (ViT or modified-ResNet tower, text tower) saved in every checkpoint; ``MODEL_CONFIGS``: tiny,
  ViT-B/32, ViT-B/16, ViT-L/14, RN50, RN101, RN50x4, RN50x16, RN50x64 (OpenAI's parameter counts);
  ``TrainConfig`` validates the CLI options. -- ``config.py``
- OpenAI/open_clip parameter names; batch-first blocks through ``F.scaled_dot_product_attention``; causal text
  mask; text pooled at ``argmax(tokens)`` (the end token has the highest id); temperature log(1/0.07), clamped
  at 100. -- ``model.py``
- byte-level BPE learnt by ``tokenizers`` from the shards' captions (first 2 M, each language drawn with XLM's
  smoothed probability, a = 0.5) when no ``--tokenizer``; NFC + lower case; pad 0, start/end the two highest ids;
  truncation keeps the end token; saved as ``tokenizer.json`` and inside the checkpoint; tokens per caption and
  the share cut at the context per language in ``OUT/tokenizer_stats.json``, a warning for a language cut far more
  often than English; a resume or an evaluation with another tokenizer is refused (fingerprint). --
  ``tokenizer.py``, ``languages.py`` (learnt on rank 0 and broadcast: ``train.py``)
- transforms without torchvision: random resized crop (90-100% area, aspect 3/4-4/3) drawn from an explicit
  seeded generator; the loader resizes the crop in uint8 with torch's antialiased bicubic kernel and keeps uint8
  (HWC, a channels-last (B, 3, H, W) view) until the device normalises; eval = shorter side + centre crop;
  CLIP's mean/std. -- ``transforms.py``
- data order is a pure function of (seed, epoch, position): per-stream shard lists, shuffle buffer and crops
  seeded by (seed, epoch, stream, sample index); the DataLoader is read strictly round-robin, and an exhausted
  stream answers with end markers instead of stopping; position = raw samples each stream's consumed batches
  covered (+ items taken, to rotate workers back to the stream whose turn it is). -- ``data.py``
- epoch size from ``sizes.json`` (or img2dataset's ``{shard}_stats.json`` successes); a malformed ``sizes.json``
  is an error naming the file (``shards.py``); more samples per epoch than exist is refused unless
  ``--allow-repeat`` (loud warning, resampled); fewer shards than ranks refused; every rank ends an epoch at the
  same step (a vote of "has a batch"; a batch another rank's end leaves unused is not committed). -- ``data.py``
- an honest epoch: every finished epoch (and the one in progress at the end) is accounted for, summed over ranks:
  samples planned, trained and left out by reason (the per-sample skips, ``over_cap``,
  ``partial_batch_dropped``, ``not_reached``, ``missing``); trained + left out == planned; one line per epoch in
  the log and ``OUT/epochs.jsonl``; without sizes.json the unread rest is said to be uncounted, never "none".
  -- ``data.py`` (``Loader.epoch_report``), ``run_log.py``
- load-time balance: ``hard`` is finalize's rule, ``probabilistic`` stage 2's seeded coin, both imported from
  ``wit_builder/core/balance.py``; a pure function of (uid, queries, plan), the same on every rank and worker and
  across resumes; the epoch is the kept samples; with ``--language-caps`` the entries are (language, query) pairs,
  each language at its own cap (MetaCLIP 2), and every epoch counts trained and over-cap samples per language.
  -- ``balance.py``, ``data.py``
- unreadable shards (once per shard), undecodable images, missing members, empty or non-UTF-8 captions are
  skipped, counted by reason (``dropped`` in metrics.jsonl, the summary line) and logged with ``shard:key``; a
  short last batch per stream is dropped and counted. -- ``data.py``
- CLIP loss: features all-gathered without gradient, local slice re-inserted with its gradient, full N x N
  symmetric CE in fp32, backward scaled by world size; SigLIP: learnable bias (-10; outside DDP, so its gradient
  is averaged over ranks by hand), texts gathered with autograd; unequal per-rank batch sizes padded.
  -- ``loss.py``, ``distributed.py`` (the gathers)
- accumulation keeps the whole batch's loss: all micro-batch features without gradient first, then each
  micro-batch recomputed with gradient in the cached matrix (temperature and SigLIP bias gradients in the last
  micro-batch, the one DDP synchronises; the others under ``no_sync``); no weight decay on gains, biases,
  temperature. -- ``train.py`` (``train_step``), ``model.py``
- checkpoint every N steps and at the end (model, optimizer, scheduler, step, every rank's RNG states and data
  position, the data plan, tokenizer; temp file, fsync, rename); ``--resume`` from any position, refusing another
  world size, model, batch size, seed, workers, loss, shuffle buffer, cap or balance rule and any change of the
  data plan; metrics.jsonl / epochs.jsonl cut back to the checkpoint's step; a larger ``--steps`` (or another
  ``--warmup``) recomputes the schedule from the checkpoint's step. -- ``checkpoint.py``, ``train.py``,
  ``run_log.py``
- DDP via ``torchrun`` (env://, nccl on CUDA, gloo on CPU); writes on rank 0 only; per-step votes (epoch end,
  SIGTERM) through a CPU gloo group, so they never sync the GPU; multi-node resume needs ``--out`` on a shared
  filesystem (checked); SIGTERM/SIGINT finish the step, checkpoint, exit 128 + the signal. -- ``distributed.py``,
  ``train.py``
"""
