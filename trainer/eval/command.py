"""``wit eval``: zero-shot classification, image-text retrieval and linear probes of a trained checkpoint.

Results are written as JSON in CLIP_benchmark's layout (``dataset``, ``model``, ``pretrained``, ``task``,
``language``, ``metrics``): the first task's record at the top level, its metrics also flattened there (so
scripts read ``acc1`` directly), and every task's record under ``results``.

Languages: one image folder is classified once per language of ``--classnames LANG=FILE`` (the same images,
class names and prompt templates of that language: ``--templates LANG=NAME_OR_FILE``, else the language's
shipped set), one record per language; retrieval adds one record per language of the shards' samples (each
language's images against its own captions) when the samples carry a ``lang``. ``--tokenizer`` is checked
against the checkpoint's: a model is only evaluated with the tokenizer it was trained with.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from trainer.atomic import check_out_file, write_atomic
from trainer.checkpoint import load_model
from trainer.eval import image_folder, linear_probe, retrieval, zeroshot
from trainer.languages import UNDETERMINED
from trainer.model import CLIP
from trainer.shards import resolve_shards
from trainer.tokenizer import Tokenizer
from trainer.transforms import eval_transform
from wit_builder.core import options, strict_json
from wit_builder.core.errors import UsageError
from wit_builder.core.options import option

EXAMPLES_KEPT = 20  # skipped inputs listed by name in the JSON (all are counted)
Transform = Callable[[Image.Image], torch.Tensor]


_ZS, _RT, _LP = "zero-shot classification", "retrieval", "linear probe"
_TEMPLATE_SETS = ", ".join(zeroshot.shipped_template_sets())
_LANGUAGE_ITEM = re.compile(r"^([a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*)=(.+)$")  # 'ja=classes_ja.txt'
DEFAULT_LANGUAGE = "en"  # of a --classnames FILE without LANG=, and of folder names


@dataclass(frozen=True)
class EvalOptions:
    """``wit eval``'s settings; the flags, defaults and help are generated from these fields."""

    checkpoint: str = option(help="checkpoint file or training output directory")
    zeroshot: str | None = option(None, metavar="DIR", group=_ZS, help="labelled images as DIR/<class name>/*.jpg")
    classnames: tuple[str, ...] = option((), many=True, metavar="[LANG=]FILE", group=_ZS,
                                         help="class names, one per line in sorted folder order, or 'folder<TAB>"
                                              "class name' lines (none: folder names with underscores as spaces); "
                                              "LANG=FILE, repeated, evaluates the images once per language "
                                              "(FILE alone: English)")
    templates: tuple[str, ...] = option((), many=True, metavar="[LANG=]NAME_OR_FILE", group=_ZS,
                                        help=f"prompt templates: a file with one '{{}}' template per line or a "
                                             f"shipped set ({_TEMPLATE_SETS}); LANG=... for one language (none: "
                                             f"each language's shipped set, English CLIP's 80)")
    tokenizer: str | None = option(None, metavar="FILE",
                                   help="refuse to evaluate unless this tokenizer.json is the checkpoint's own")
    retrieval: tuple[str, ...] = option((), many=True, metavar="SHARDS", group=_RT,
                                        help="held-out WebDataset shards: directories, globs, brace patterns or "
                                             "URLs ('::' joins several); repeatable")
    retrieval_chunk: int = option(1024, unit="images", group=_RT,
                                  help="images scored against every caption at a time (memory: chunk x captions "
                                       "floats)")
    linear_probe_train: str | None = option(None, metavar="DIR", group=_LP, help="training images as DIR/<class>/*.jpg")
    linear_probe_test: str | None = option(None, metavar="DIR", group=_LP, help="test images as DIR/<class>/*.jpg")
    fewshot_k: tuple[int, ...] = option((), many=True, metavar="K", group=_LP,
                                        help="also train k-shot probes (exactly K images per class, seeded), "
                                             "e.g. 1 2 4 8 16")
    linear_probe_c: float | None = option(None, group=_LP, help="fixed inverse L2 strength C (none: searched)")
    linear_probe_max_iter: int = option(1000, group=_LP, help="L-BFGS iterations per fit (the paper's 1,000)")
    seed: int = option(0, group=_LP, help="seed of the few-shot draw and validation split")
    batch_size: int = option(256, unit="images", help="images per forward pass")
    workers: int = option(min(4, os.cpu_count() or 1), unit="processes",
                          help="image decoding processes (0: in this process)")
    device: str = option("cuda" if torch.cuda.is_available() else "cpu", help="torch device (cpu, cuda, cuda:1)")
    precision: str = option("fp32", choices=("fp32", "bf16"), help="autocast dtype on the device")
    max_skipped_fraction: float = option(0.5, help="fail when more than this share of a dataset's images cannot "
                                                   "be read")
    out: str | None = option(None, metavar="FILE", help="write the JSON results here (none: print them)")

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")
        if not 0 <= self.max_skipped_fraction <= 1:  # a share of the images: 2 would never fail
            raise ValueError(f"--max-skipped-fraction must be between 0 and 1, got {self.max_skipped_fraction}")
        if bool(self.linear_probe_train) != bool(self.linear_probe_test):
            raise ValueError("give both --linear-probe-train and --linear-probe-test")
        if self.fewshot_k and not self.linear_probe_train:
            raise ValueError("--fewshot-k needs --linear-probe-train and --linear-probe-test")
        if not (self.zeroshot or self.retrieval or self.linear_probe_train):
            raise ValueError("nothing to evaluate: give --zeroshot DIR, --retrieval SHARDS or "
                             "--linear-probe-train DIR --linear-probe-test DIR")


OPTIONS = EvalOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``wit eval``'s flags, generated from ``EvalOptions``."""
    options.add_arguments(parser, OPTIONS)


def _record(dataset: str, model_name: str, checkpoint: str, task: str, metrics: dict, inputs: dict,
            language: str = DEFAULT_LANGUAGE) -> dict:
    return {"dataset": dataset, "model": model_name, "pretrained": checkpoint, "task": task, "language": language,
            "metrics": metrics, "inputs": inputs}


def split_language(item: str, flag: str) -> tuple[str | None, str]:
    """'ja=FILE' -> ('ja', 'FILE'); 'FILE' -> (None, 'FILE') (a path holding '=' stays whole unless it starts
    with a language code)."""
    found = _LANGUAGE_ITEM.match(item)
    if found is None:
        return None, item
    if not found.group(2).strip():
        raise ValueError(f"{flag} {item}: nothing after '='")
    return found.group(1), found.group(2)


def zeroshot_languages(args: EvalOptions) -> list[tuple[str, str | None, str]]:
    """(language, class-name file or None, template set or file) per language to evaluate, in the order given.
    Raises ValueError for a language given twice or one without a template set."""
    named: list[tuple[str, str | None]] = []
    for item in args.classnames:
        lang, path = split_language(item, "--classnames")
        named.append((lang or DEFAULT_LANGUAGE, path))
    if not named:
        named = [(DEFAULT_LANGUAGE, None)]
    langs = [lang for lang, _ in named]
    twice = sorted({lang for lang in langs if langs.count(lang) > 1})
    if twice:
        raise ValueError(f"--classnames gives language(s) {twice} twice; one class-name file per language")
    per_language: dict[str, str] = {}
    every: str | None = None
    for item in args.templates:
        lang, value = split_language(item, "--templates")
        if lang is None:
            if every is not None:
                raise ValueError("--templates without LANG= given twice; use LANG=NAME_OR_FILE for each language")
            every = value
        else:
            per_language[lang] = value
    unknown = sorted(set(per_language) - set(langs))
    if unknown:
        raise ValueError(f"--templates for language(s) {unknown} that no --classnames LANG=FILE evaluates")
    return [(lang, path, per_language.get(lang) or every or zeroshot.language_template_set(lang))
            for lang, path in named]


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


def run_zeroshot(args: EvalOptions, model: CLIP, tokenizer: Tokenizer, transform: Transform,
                 model_name: str) -> list[dict]:
    """Zero-shot classification of an image folder (CLIP paper sec. 3.1.4: prompt-ensembled class embeddings),
    once per language (``zeroshot_languages``): the images are encoded once, each language builds its classifier
    from its class names and templates. One CLIP_benchmark record per language. Raises ValueError over
    ``--max-skipped-fraction`` unreadable images, for class-name or template files that do not fit (file:line)
    and for a language without a template set."""
    assert args.zeroshot is not None
    plan = zeroshot_languages(args)
    folder = image_folder.scan_image_folder(args.zeroshot, plan[0][1])
    per_language = []
    for lang, names_file, template_source in plan:  # every input is checked before any image is encoded
        names, order = (folder.classnames, folder.folders) if names_file == plan[0][1] else \
            image_folder.scan_classnames(folder.root, names_file)
        per_language.append((lang, names_file, template_source, names, order,
                             zeroshot.load_templates(template_source)))
    features, labels, errors = image_folder.encode_image_folder(
        folder, model.encode_image, transform, batch_size=args.batch_size, workers=args.workers,
        device=args.device, progress=_progress("zeroshot"))
    inputs = _skip_report(len(folder.samples), errors, len(folder.ignored), args.max_skipped_fraction,
                          args.zeroshot)
    records = []
    for lang, names_file, template_source, names, order, templates in per_language:
        print(f"zeroshot [{lang}]: {len(folder.samples)} images, {len(names)} classes, {len(templates)} templates",
              flush=True)
        classifier = zeroshot.build_classifier(model.encode_text, tokenizer, names, templates,
                                               batch_size=args.batch_size, device=args.device)
        # this language's label of each image: its folder's position in this language's class list
        position = {folder_name: i for i, folder_name in enumerate(order) if folder_name}
        relabel = torch.tensor([position.get(folder_name, -1) for folder_name in folder.folders])
        metrics = zeroshot.classification_metrics(zeroshot.zeroshot_logits(features, classifier.cpu()),
                                                  relabel[labels])
        record_inputs = {**inputs, "classes": len(names), "templates": len(templates),
                         "template_source": str(template_source), "classnames": names_file}
        records.append(_record(Path(args.zeroshot).name, model_name, args.checkpoint, "zeroshot_classification",
                               metrics, record_inputs, language=lang))
    return records


def run_retrieval(args: EvalOptions, model: CLIP, tokenizer: Tokenizer, transform: Transform,
                  model_name: str) -> list[dict]:
    """Image-text retrieval recall@k over shards (each image against every caption): one CLIP_benchmark record,
    then, when the samples carry languages, one per language (its images against its captions). Raises
    ValueError over ``--max-skipped-fraction`` unreadable samples."""
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
    languages = sorted(set(stats.languages))
    records = [_record(dataset, model_name, args.checkpoint, "zeroshot_retrieval", metrics, inputs,
                       language="all" if set(languages) - {UNDETERMINED} else DEFAULT_LANGUAGE)]
    if set(languages) - {UNDETERMINED}:  # the samples carry languages: each one's images against its captions
        for lang in languages:
            subset = torch.tensor([i for i, found in enumerate(stats.languages) if found == lang])
            caption_ids = torch.isin(owners, subset).nonzero().squeeze(1)
            renumber = torch.full((len(images),), -1, dtype=torch.long)
            renumber[subset] = torch.arange(len(subset))
            lang_metrics = retrieval.retrieval_recall(images[subset], texts[caption_ids],
                                                      renumber[owners[caption_ids]], chunk_size=args.retrieval_chunk)
            records.append(_record(dataset, model_name, args.checkpoint, "zeroshot_retrieval", lang_metrics,
                                   {"images": len(subset), "captions": len(caption_ids)}, language=lang))
    return records


def run_linear_probe(args: EvalOptions, model: CLIP, transform: Transform, model_name: str) -> list[dict]:
    """Linear probes on frozen image features (``trainer.eval.linear_probe``): the full-data record, then one per
    ``--fewshot-k``. Raises ValueError over ``--max-skipped-fraction`` unreadable images."""
    assert args.linear_probe_train is not None and args.linear_probe_test is not None
    encoded: dict[str, Any] = {}
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


def _summary(record: dict, languages: set[str]) -> str:
    """One record's part of the summary line; its language is named unless every record is English (beside
    '[all]' or '[ja]', an unnamed English record would read as the overall one)."""
    m = record["metrics"]
    lang = "" if languages == {DEFAULT_LANGUAGE} else f" [{record['language']}]"
    if record["task"] == "zeroshot_classification":
        return (f"zeroshot{lang} acc1={m['acc1']:.4f} acc5={m['acc5']:.4f} "
                f"mean_per_class_recall={m['mean_per_class_recall']:.4f} ({record['inputs']['images']} images)")
    if record["task"] == "zeroshot_retrieval":
        return (f"retrieval{lang} image_R@1={m['image_retrieval_recall@1']:.4f} "
                f"text_R@1={m['text_retrieval_recall@1']:.4f}"
                f" ({record['inputs']['images']} images)")
    shots = "full" if m["fewshot_k"] is None else f"{m['fewshot_k']}-shot"
    return f"linear probe ({shots}) acc1={m['lp_acc1']:.4f}"


def check_tokenizer(tokenizer: Tokenizer, model: CLIP, given: str | None) -> None:
    """Refuse a tokenizer the model was not trained with: ``given`` (``--tokenizer``) must be the checkpoint's
    own (same fingerprint), and the checkpoint's must fit the text tower's embedding. Raises ValueError."""
    rows = model.config.text.vocab_size
    if tokenizer.vocab_size != rows:
        raise ValueError(f"the checkpoint's tokenizer has {tokenizer.vocab_size} ids but its text tower embeds "
                         f"{rows}: it was not trained with this tokenizer")
    if given is None:
        return
    other = Tokenizer.load(given)
    if other.fingerprint() != tokenizer.fingerprint():
        raise ValueError(f"--tokenizer {given} (fingerprint {other.fingerprint()}, {other.vocab_size} ids) is not "
                         f"the tokenizer the checkpoint was trained with ({tokenizer.fingerprint()}, "
                         f"{tokenizer.vocab_size} ids); leave out --tokenizer to use the checkpoint's own")


def evaluate(args: EvalOptions | argparse.Namespace) -> dict[str, Any]:
    """Run every requested task; the CLIP_benchmark-style document."""
    if isinstance(args, argparse.Namespace):  # a caller's namespace gets the same checks as the command line
        args = options.from_namespace(EvalOptions, args)
    assert isinstance(args, EvalOptions)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    model, tokenizer = load_model(args.checkpoint, device=args.device)
    check_tokenizer(tokenizer, model, args.tokenizer)
    model_name = model.config.name
    transform = eval_transform(model.config.image_size)
    autocast = (torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
                if args.precision == "bf16" else contextlib.nullcontext())
    records = []
    with autocast:
        if args.zeroshot:
            records.extend(run_zeroshot(args, model, tokenizer, transform, model_name))
        if args.retrieval:
            records.extend(run_retrieval(args, model, tokenizer, transform, model_name))
        if args.linear_probe_train:
            records.extend(run_linear_probe(args, model, transform, model_name))
    primary = records[0]
    return {**primary, **primary["metrics"], "results": records}


def run(args: EvalOptions, beam_argv: list[str]) -> int:
    """``wit eval``: exit 0 with the document written (stdout or ``--out``).

    Raises UsageError (exit 2, one line) for a bad option or input: an unreadable checkpoint, folder, template
    file or shard, too many unreadable images (every ValueError of the evaluation says which); FileNotFoundError
    (exit 2, one line) for a missing one.
    """
    try:
        if args.out:  # before the work: an --out that cannot become a file fails in a second, not after the eval
            check_out_file(args.out, example="eval.json")
        document = evaluate(args)
    except ValueError as e:  # the inputs' checks live in the task modules, as ValueErrors naming the input
        raise UsageError(str(e)) from e
    text = strict_json.dumps(document, indent=2)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    else:
        print(text)
    languages = {r["language"] for r in document["results"]}
    summary = "; ".join(_summary(r, languages) for r in document["results"])
    print(f"wit eval: {summary}" + (f" -> {args.out}" if args.out else ""), flush=True)
    return 0
