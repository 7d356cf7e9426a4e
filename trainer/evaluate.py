"""``wit eval``: zero-shot classification, image-text retrieval and linear probes of a trained checkpoint.

Results are written as JSON in CLIP_benchmark's layout (``dataset``, ``model``, ``pretrained``, ``task``,
``metrics``): the first task's record at the top level, its metrics also flattened there (so scripts read
``acc1`` directly), and every task's record under ``results``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from trainer import image_folder, linear_probe, retrieval, zeroshot
from trainer.atomic import write_atomic
from trainer.checkpoint import load_model
from trainer.data import resolve_shards
from trainer.model import CLIP
from trainer.tokenizer import Tokenizer
from trainer.transforms import eval_transform

EXAMPLES_KEPT = 20  # skipped inputs listed by name in the JSON (all are counted)
Transform = Callable[[Image.Image], torch.Tensor]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or training output directory")
    zs = parser.add_argument_group("zero-shot classification")
    zs.add_argument("--zeroshot", metavar="DIR", help="labelled images as DIR/<class name>/*.jpg")
    zs.add_argument("--classnames", metavar="FILE",
                    help="class names, one per line in sorted folder order, or 'folder<TAB>class name' lines "
                         "(default: folder names with underscores as spaces)")
    zs.add_argument("--templates", default=zeroshot.DEFAULT_TEMPLATES, metavar="NAME_OR_FILE",
                    help=f"prompt templates: a file with one '{{}}' template per line or a shipped set "
                         f"({', '.join(zeroshot.shipped_template_sets())}); default: %(default)s")
    rt = parser.add_argument_group("retrieval")
    rt.add_argument("--retrieval", nargs="+", metavar="SHARDS",
                    help="held-out WebDataset shards: directories, globs, brace patterns or URLs ('::' joins several)")
    rt.add_argument("--retrieval-chunk", type=int, default=1024,
                    help="images scored against every caption at a time (memory: chunk x captions floats)")
    lp = parser.add_argument_group("linear probe")
    lp.add_argument("--linear-probe-train", metavar="DIR", help="training images as DIR/<class>/*.jpg")
    lp.add_argument("--linear-probe-test", metavar="DIR", help="test images as DIR/<class>/*.jpg")
    lp.add_argument("--fewshot-k", type=int, nargs="+", metavar="K",
                    help="also train k-shot probes (exactly K images per class, seeded), e.g. 1 2 4 8 16")
    lp.add_argument("--linear-probe-c", type=float, help="fixed inverse L2 strength C (default: searched)")
    lp.add_argument("--linear-probe-max-iter", type=int, default=1000,
                    help="L-BFGS iterations per fit (the paper's 1,000 by default)")
    lp.add_argument("--seed", type=int, default=0, help="seed of the few-shot draw and validation split")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="image decoding processes (0: in this process)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="autocast dtype on the device")
    parser.add_argument("--max-skipped-fraction", type=float, default=0.5,
                        help="fail when more than this share of a dataset's images cannot be read")
    parser.add_argument("--out", metavar="FILE", help="write the JSON results here (default: print them)")


def _record(dataset: str, model_name: str, checkpoint: str, task: str, metrics: dict, inputs: dict) -> dict:
    return {"dataset": dataset, "model": model_name, "pretrained": checkpoint, "task": task, "language": "en",
            "metrics": metrics, "inputs": inputs}


def _skip_report(total: int, errors: list[str], ignored: int, limit: float, what: str) -> dict:
    if total and len(errors) / total > limit:
        raise ValueError(f"{what}: {len(errors)} of {total} images could not be read (more than "
                         f"--max-skipped-fraction {limit}); first: {errors[0]}")
    return {"images": total - len(errors), "skipped_unreadable": len(errors), "ignored_non_image_files": ignored,
            "skipped_examples": errors[:EXAMPLES_KEPT]}


def _progress(label: str) -> Callable[[int, int], None]:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 5:
            last[0] = now
            print(f"{label}: encoded {done}/{total} images", flush=True)

    return report


def run_zeroshot(args: argparse.Namespace, model: CLIP, tokenizer: Tokenizer, transform: Transform,
                 model_name: str) -> dict:
    folder = image_folder.scan_image_folder(args.zeroshot, args.classnames)
    templates = zeroshot.load_templates(args.templates)
    print(f"zeroshot: {len(folder.samples)} images, {len(folder.classnames)} classes, "
          f"{len(templates)} templates", flush=True)
    classifier = zeroshot.build_classifier(model.encode_text, tokenizer, folder.classnames, templates,
                                           batch_size=args.batch_size, device=args.device)
    features, labels, errors = image_folder.encode_image_folder(
        folder, model.encode_image, transform, batch_size=args.batch_size, workers=args.workers,
        device=args.device, progress=_progress("zeroshot"))
    inputs = _skip_report(len(folder.samples), errors, len(folder.ignored), args.max_skipped_fraction,
                          args.zeroshot)
    inputs.update(classes=len(folder.classnames), templates=len(templates), template_source=str(args.templates))
    metrics = zeroshot.classification_metrics(zeroshot.zeroshot_logits(features, classifier.cpu()), labels)
    return _record(Path(args.zeroshot).name, model_name, args.checkpoint, "zeroshot_classification", metrics, inputs)


def run_retrieval(args: argparse.Namespace, model: CLIP, tokenizer: Tokenizer, transform: Transform,
                  model_name: str) -> dict:
    urls = [url for spec in args.retrieval for url in resolve_shards(spec)]
    print(f"retrieval: reading {len(urls)} shard(s)", flush=True)
    images, texts, owners, stats = retrieval.encode_shards(
        urls, model.encode_image, model.encode_text, transform, tokenizer, batch_size=args.batch_size,
        workers=args.workers, device=args.device,
        progress=lambda n: print(f"retrieval: encoded {n} images", flush=True))
    skipped = sum(stats.skipped.values())
    if skipped / (skipped + stats.samples) > args.max_skipped_fraction:
        raise ValueError(f"retrieval: {skipped} of {skipped + stats.samples} samples were unreadable (more than "
                         f"--max-skipped-fraction {args.max_skipped_fraction}); first: {stats.examples[0]}")
    metrics = retrieval.retrieval_recall(images, texts, owners, chunk_size=args.retrieval_chunk)
    inputs = {"shards": len(urls), "images": len(images), "captions": len(texts), "skipped": stats.skipped,
              "skipped_examples": stats.examples[:EXAMPLES_KEPT]}
    dataset = Path(args.retrieval[0].rstrip("/")).name if len(args.retrieval) == 1 else "shards"
    return _record(dataset, model_name, args.checkpoint, "zeroshot_retrieval", metrics, inputs)


def run_linear_probe(args: argparse.Namespace, model: CLIP, transform: Transform, model_name: str) -> list[dict]:
    encoded = {}
    for split, root in (("train", args.linear_probe_train), ("test", args.linear_probe_test)):
        folders = encoded["train"][0].folders if split == "test" else None
        folder = image_folder.scan_image_folder(root, folders=folders)
        features, labels, errors = image_folder.encode_image_folder(
            folder, model.encode_image, transform, batch_size=args.batch_size, workers=args.workers,
            device=args.device, progress=_progress(f"linear probe {split}"))
        report = _skip_report(len(folder.samples), errors, len(folder.ignored), args.max_skipped_fraction, root)
        encoded[split] = (folder, features.numpy(), labels.numpy(), report)
    train_folder, train_x, train_y, train_report = encoded["train"]
    _, test_x, test_y, test_report = encoded["test"]
    records = []
    for k in [None, *(args.fewshot_k or [])]:
        print(f"linear probe: fitting {'full-data' if k is None else f'{k}-shot'} logistic regression", flush=True)
        result = linear_probe.linear_probe(train_x, train_y, test_x, test_y, num_classes=len(train_folder.folders),
                                           fewshot_k=k, seed=args.seed, c=args.linear_probe_c,
                                           max_iter=args.linear_probe_max_iter)
        result_dict = result.to_dict()
        metrics = {key: result_dict.pop(key) for key in ("lp_acc1", "lp_acc5", "lp_mean_per_class_recall")}
        metrics.update(result_dict)
        inputs = {"train": train_report, "test": test_report, "classes": len(train_folder.folders)}
        records.append(_record(Path(args.linear_probe_test).name, model_name, args.checkpoint, "linear_probe",
                               metrics, inputs))
    return records


def _summary(record: dict) -> str:
    m = record["metrics"]
    if record["task"] == "zeroshot_classification":
        return (f"zeroshot acc1={m['acc1']:.4f} acc5={m['acc5']:.4f} "
                f"mean_per_class_recall={m['mean_per_class_recall']:.4f} ({record['inputs']['images']} images)")
    if record["task"] == "zeroshot_retrieval":
        return (f"retrieval image_R@1={m['image_retrieval_recall@1']:.4f} text_R@1={m['text_retrieval_recall@1']:.4f}"
                f" ({record['inputs']['images']} images)")
    shots = "full" if m["fewshot_k"] is None else f"{m['fewshot_k']}-shot"
    return f"linear probe ({shots}) acc1={m['lp_acc1']:.4f}"


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run every requested task; the CLIP_benchmark-style document."""
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if bool(args.linear_probe_train) != bool(args.linear_probe_test):
        raise ValueError("give both --linear-probe-train and --linear-probe-test")
    if args.fewshot_k and not args.linear_probe_train:
        raise ValueError("--fewshot-k needs --linear-probe-train and --linear-probe-test")
    if not (args.zeroshot or args.retrieval or args.linear_probe_train):
        raise ValueError("nothing to evaluate: give --zeroshot DIR, --retrieval SHARDS or "
                         "--linear-probe-train DIR --linear-probe-test DIR")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    model, tokenizer = load_model(args.checkpoint, device=args.device)
    model_name = model.config.name
    transform = eval_transform(model.config.image_size)
    autocast = (torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
                if args.precision == "bf16" else contextlib.nullcontext())
    records = []
    with autocast:
        if args.zeroshot:
            records.append(run_zeroshot(args, model, tokenizer, transform, model_name))
        if args.retrieval:
            records.append(run_retrieval(args, model, tokenizer, transform, model_name))
        if args.linear_probe_train:
            records.extend(run_linear_probe(args, model, transform, model_name))
    primary = records[0]
    return {**primary, **primary["metrics"], "results": records}


def run(args: argparse.Namespace, beam_argv: list[str]) -> int:
    try:
        document = evaluate(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"wit eval: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(document, indent=2)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    else:
        print(text)
    summary = "; ".join(_summary(r) for r in document["results"])
    print(f"wit eval: {summary}" + (f" -> {args.out}" if args.out else ""), flush=True)
    return 0
