"""Trainer throughput, end to end from JPEG shards (`make bench-train`).

CPU (always): first the data path per worker against open_clip's loader, side by side in one run on the same
256 px JPEG shards, 224 px crops, one process each, alternating for ``--rounds`` rounds (the median ratio is
printed). open_clip's loader is its ``get_wds_dataset`` pipeline: webdataset decode "pilrgb", its training
``image_transform`` (RandomResizedCrop(224, scale=(0.9, 1.0), bicubic), ToTensor, Normalize) and its tokenizer,
batched; without open_clip, the same definition from torchvision (captions left as strings), and without
torchvision, the same steps in PIL. Then the tiny model from those shards — the data path with workers, the model
alone on synthetic tensors, and `wit train` end to end, in samples/s with the share of each step spent waiting
for data.
CUDA (when present): ViT-B/32 in bf16 end to end, PIL decode in workers vs nvJPEG decode on the GPU (when
torchvision is importable), eager vs torch.compile, and the model alone next to open_clip's ViT-B/32 (when
open_clip is importable), all in one run on one card. Prints a table; asserts nothing.

    python benchmarks/bench_train.py [--samples 2048] [--steps 40] [--workers N] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.trainer.conftest import CLASSES, write_shards  # noqa: E402
from trainer.config import MODEL_CONFIGS, TrainConfig  # noqa: E402
from trainer.data import Loader, make_plan, torchvision_gpu_decode_available  # noqa: E402
from trainer.loss import ClipLoss  # noqa: E402
from trainer.model import CLIP  # noqa: E402
from trainer.tokenizer import Tokenizer  # noqa: E402
from trainer.train import train  # noqa: E402

ROWS: list[tuple[str, float, str]] = []


def row(what: str, samples_per_s: float, note: str = "") -> None:
    ROWS.append((what, samples_per_s, note))
    print(f"  {what:<58} {samples_per_s:>9.0f} samples/s  {note}", flush=True)


def data_only(shards: Path, tokenizer: Tokenizer, image_size: int, batch: int, workers: int, batches: int,
              gpu_decode: bool = False) -> float:
    plan = make_plan(str(shards), batch_size=batch, image_size=image_size, workers=workers, resampled=True,
                     gpu_decode=gpu_decode, samples_per_epoch=batch * (batches + 1), allow_repeat=True)
    it = iter(Loader(plan, tokenizer))
    next(it)  # workers started, buffers filled
    started = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - started)


CLIP_MEAN_STD = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def peer_loaders(shards: Path, batch: int, shuffle: int) -> list[tuple[str, object]]:
    """open_clip's training data pipeline (open_clip_train/data.py get_wds_dataset, one worker), as far as it is
    importable: open_clip itself (its transform and tokenizer), and its definition with torchvision (images only;
    captions left as strings), else the same steps in PIL."""
    import webdataset as wds

    urls = sorted(str(p) for p in shards.glob("*.tar"))

    def pipeline(image, text):
        return wds.DataPipeline(
            wds.SimpleShardList(urls), wds.tarfile_to_samples(), wds.shuffle(shuffle), wds.decode("pilrgb"),
            wds.rename(image="jpg;png;jpeg;webp", text="txt"), wds.map_dict(image=image, text=text),
            wds.to_tuple("image", "text"), wds.batched(batch, partial=False))

    peers = []
    try:
        import open_clip
    except ImportError:
        pass
    else:
        tokenizer = open_clip.get_tokenizer("ViT-B-32")
        peers.append((f"open_clip {open_clip.__version__} loader (its transform + tokenizer)",
                      pipeline(open_clip.image_transform(224, is_train=True), lambda t: tokenizer(t)[0])))
    try:
        from torchvision import transforms as T
    except ImportError:
        peers.append(("open_clip's loader definition in PIL (images only)", pipeline(_pil_definition(), str)))
    else:
        image = T.Compose([T.RandomResizedCrop(224, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                           T.ToTensor(), T.Normalize(*CLIP_MEAN_STD)])
        peers.append(("open_clip's loader definition, torchvision (images only)", pipeline(image, str)))
    return peers


def _pil_definition():
    import random

    import numpy as np
    from PIL import Image

    from trainer.transforms import random_resized_crop_box

    mean, std = (torch.tensor(v).view(3, 1, 1) for v in CLIP_MEAN_STD)
    rng = random.Random(0)

    def transform(image: Image.Image) -> torch.Tensor:
        box = random_resized_crop_box(image.width, image.height, rng)
        crop = image.resize((224, 224), Image.Resampling.BICUBIC, box=box)
        tensor = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 255  # ToTensor
        return (tensor - mean) / std  # Normalize

    return transform


def per_worker_ratio(shards: Path, tokenizer: Tokenizer, batch: int, rounds: int) -> None:
    """Ours and each peer, each in this one process (= one worker), alternating; samples/s over a whole pass."""
    shuffle = 256
    plan = make_plan(str(shards), batch_size=batch, image_size=224, workers=0, shuffle_buffer=shuffle)
    peers = peer_loaders(shards, batch, shuffle)

    def rate(batches) -> tuple[float, float]:
        # Samples per CPU second of this process (what a worker costs; steady on a shared machine) and per
        # wall-clock second.
        wall, cpu, n = time.perf_counter(), time.process_time(), 0
        for b in batches:
            n += (b["images"] if isinstance(b, dict) else b[0]).shape[0]
        return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)

    ours: list[tuple[float, float]] = []
    theirs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in peers}
    for _ in range(rounds):
        ours.append(rate(Loader(plan, tokenizer).epoch_batches()))
        for name, peer in peers:
            theirs[name].append(rate(peer))
    row("per worker: ours (uint8 crops + tokens)", _median([c for c, _ in ours]),
        f"per CPU second; {_median([w for _, w in ours]):.0f} per wall second")
    for name, rates in theirs.items():
        cpu = [a[0] / b[0] for a, b in zip(ours, rates, strict=True)]
        wall = [a[1] / b[1] for a, b in zip(ours, rates, strict=True)]
        row(f"per worker: {name}", _median([c for c, _ in rates]),
            f"ours {_median(cpu):.2f}x per CPU second (rounds {', '.join(f'{r:.2f}' for r in cpu)}); "
            f"{_median(wall):.2f}x per wall second")
        print(f"per-worker ratio against {name}: {_median(cpu):.2f}x (goal >= 2.0x)", flush=True)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def model_only(model: torch.nn.Module, image_size: int, context: int, vocab: int, batch: int, steps: int,
               device: str, bf16: bool, encode=None) -> float:
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    tokens = torch.randint(1, vocab - 1, (batch, context), device=device)
    tokens[:, -1] = vocab - 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = ClipLoss()
    encode = encode or model

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            img, txt, scale = encode(images, tokens)
            loss = loss_fn(img, txt, scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def end_to_end(shards: Path, out: Path, tokenizer_path: Path, **options) -> tuple[float, float]:
    """Samples/s and data-wait share of `wit train`, from the log windows after the first (warm-up, compile)."""
    # One epoch spans the run (resampled shards, repeats allowed): the steady state, not epoch restarts.
    cfg = TrainConfig(shards=str(shards), out=str(out), tokenizer=str(tokenizer_path), checkpoint_every=10**9,
                      resampled=True, allow_repeat=True, samples_per_epoch=options["batch_size"] * options["steps"],
                      **options)
    train(cfg)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    return (sum(r["samples_per_s"] for r in records) / len(records),
            sum(r["data_wait"] for r in records) / len(records))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1024, help="photos in the generated 256 px shards")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the per-worker comparison")
    parser.add_argument("--loader-only", action="store_true", help="only the per-worker comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = tmp / "shards"
        started = time.perf_counter()
        per_class = max(1, args.samples // 8)
        sizes = write_shards(shards, per_class=per_class, samples_per_shard=max(1, per_class * 8 // 16), image_px=256)
        print(f"shards: {sum(sizes.values())} photos of 256 px in {len(sizes)} shards "
              f"({time.perf_counter() - started:.1f}s); {os.cpu_count()} CPUs, workers {args.workers}")
        tokenizer = Tokenizer.train([c for _, t in CLASSES.values() for c in t] * 50, 1000)
        tokenizer_path = tmp / "tokenizer.json"
        tokenizer.save(tokenizer_path)

        print("CPU, one worker each, 224 px crops from 256 px JPEGs, batch 64:")
        torch.set_num_threads(1)  # a DataLoader worker runs torch with one thread
        per_worker_ratio(shards, tokenizer, 64, args.rounds)
        if args.loader_only:
            return 0

        print("CPU, tiny model (32 px, batch 64, fp32):")
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - args.workers))
        tiny = MODEL_CONFIGS["tiny"].with_vocab_size(tokenizer.vocab_size)
        row("data path alone (PIL decode + crop, workers)",
            data_only(shards, tokenizer, 32, 64, args.workers, args.steps))
        row("model alone (synthetic tensors)",
            model_only(CLIP(tiny), 32, tiny.text.context_length, tiny.text.vocab_size, 64, args.steps, "cpu", False))
        rate, wait = end_to_end(shards, tmp / "cpu", tokenizer_path, model="tiny", batch_size=64,
                                steps=args.steps, log_every=max(1, args.steps // 4), workers=args.workers)
        row("wit train end to end", rate, f"data wait {100 * wait:.0f}%")

        if torch.cuda.is_available():
            gpu(shards, tmp, tokenizer, tokenizer_path, args)
        else:
            print("no CUDA device: the ViT-B/32 rows (CPU vs GPU decode, eager vs compiled) need one")
    print("\n| run | samples/s | note |\n| --- | ---: | --- |")
    for what, rate, note in ROWS:
        print(f"| {what} | {rate:.0f} | {note} |")
    return 0


def gpu(shards: Path, tmp: Path, tokenizer: Tokenizer, tokenizer_path: Path, args) -> None:
    name = torch.cuda.get_device_name()
    print(f"CUDA, ViT-B/32, bf16, on {name}:")
    config = MODEL_CONFIGS["ViT-B/32"].with_vocab_size(tokenizer.vocab_size)
    ctx, vocab = config.text.context_length, config.text.vocab_size
    model = CLIP(config).cuda()
    row("model alone, batch 256, eager", model_only(model, 224, ctx, vocab, 256, args.steps, "cuda", True))
    compiled = torch.compile(model)
    row("model alone, batch 1024, compiled",
        model_only(model, 224, ctx, vocab, 1024, args.steps, "cuda", True, encode=compiled))
    try:
        import open_clip
    except ImportError:
        print("  open_clip not importable: no side-by-side model row")
    else:
        peer, _, _ = open_clip.create_model_and_transforms("ViT-B-32")
        peer = peer.cuda()

        def peer_forward(images, tokens):
            out = peer(images, tokens)
            return out[0], out[1], out[2]

        row("open_clip ViT-B-32 model alone, batch 256, eager",
            model_only(peer, 224, 77, 49408, 256, args.steps, "cuda", True, encode=peer_forward))
    del model, compiled
    torch.cuda.empty_cache()
    row("data path alone, PIL decode", data_only(shards, tokenizer, 224, 256, args.workers, args.steps // 2))
    common = {"model": "ViT-B/32", "device": "cuda", "precision": "bf16", "steps": args.steps,
              "log_every": max(1, args.steps // 4), "workers": args.workers}
    for batch, compile_ in ((256, False), (512, True)):
        rate, wait = end_to_end(shards, tmp / f"e2e-{batch}", tokenizer_path, batch_size=batch, compile=compile_,
                                **common)
        row(f"end to end, PIL decode, batch {batch}, {'compiled' if compile_ else 'eager'}", rate,
            f"data wait {100 * wait:.0f}%")
        if torchvision_gpu_decode_available():
            rate, wait = end_to_end(shards, tmp / f"e2e-gpu-{batch}", tokenizer_path, batch_size=batch,
                                    compile=compile_, gpu_decode=True, **common)
            row(f"end to end, nvJPEG decode, batch {batch}, {'compiled' if compile_ else 'eager'}", rate,
                f"data wait {100 * wait:.0f}%")
    if not torchvision_gpu_decode_available():
        print("  torchvision not importable: no GPU-decode rows")


if __name__ == "__main__":
    sys.exit(main())
