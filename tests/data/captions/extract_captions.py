"""Make ``image_captions.tsv`` of this folder from a checkout of IGLUE (how the file was made).

    python tests/data/captions/extract_captions.py IGLUE_CHECKOUT [--images 500] [--wit 500] \
        > tests/data/captions/image_captions.tsv

IGLUE_CHECKOUT is https://github.com/e-bug/iglue at commit 43cbac91513388d40b2c6d93925f00ca9fc08a98. Output:
a header, then ``lang<TAB>source<TAB>image<TAB>caption`` per caption, in this order:

- ``xflickrco``: the first ``--images`` COCO val2014 images of xFlickr&CO's test set (lines 1001-2000 of
  ``datasets/xFlickrCO/annotations/<lang>/test.jsonl``; lines 1-1000 are Flickr30K images, left out) in en, de,
  es, id, ja, ru, tr, zh; row k of every language describes the same image (``image``: the COCO file name).
- ``xvnli``: the distinct French premises of XVNLI's test set (``datasets/XVNLI/annotations/fr/test.jsonl``,
  ``sentence1``; ``image``: the Flickr30K id), in file order.
- ``wit``: the first ``--wit`` distinct reference captions of IGLUE's WIT test sets for Korean and Arabic
  Wikipedia (``datasets/wit/annotations/test_{ko,ar}.jsonl``, ``caption_reference_description``; ``image``:
  ``wit_ix``) that hold at least one Hangul / Arabic letter: a caption of a page of ko.wikipedia may be a Latin
  book title or a name ("Duke Ellington Orchestra"), which says nothing of the page's language.

Every caption's runs of white space (tabs and line breaks included) become one space, and the ends are stripped,
so that the file reads with ``csv.QUOTE_NONE``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

XFLICKRCO_LANGS = ("en", "de", "es", "id", "ja", "ru", "tr", "zh")
FLICKR_IMAGES = 1000  # xFlickr&CO's test set: 1000 Flickr30K images, then 1000 COCO val2014 images
SCRIPT = {"ko": re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]"),  # Hangul syllables and jamo
          "ar": re.compile("[\u0620-\u064a\u0671-\u06d3]")}  # Arabic letters


def clean(text: str) -> str:
    return " ".join(text.split())


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rows(root: Path, images: int, wit: int) -> list[tuple[str, str, str, str]]:
    """(lang, source, image, caption) in the order the module docstring gives."""
    out: list[tuple[str, str, str, str]] = []
    for lang in XFLICKRCO_LANGS:
        records = jsonl(root / "datasets" / "xFlickrCO" / "annotations" / lang / "test.jsonl")
        for record in records[FLICKR_IMAGES:FLICKR_IMAGES + images]:
            out.append((lang, "xflickrco", Path(record["img_path"]).stem, clean(record["sentences"][0])))
    seen: set[str] = set()
    for record in jsonl(root / "datasets" / "XVNLI" / "annotations" / "fr" / "test.jsonl"):
        caption = clean(record["sentence1"])
        if caption not in seen:
            seen.add(caption)
            out.append(("fr", "xvnli", record["Flikr30kID"], caption))
    for lang in ("ko", "ar"):
        seen, n = set(), 0
        for record in jsonl(root / "datasets" / "wit" / "annotations" / f"test_{lang}.jsonl"):
            caption = clean(record["caption_reference_description"])
            if n < wit and caption not in seen and SCRIPT[lang].search(caption):
                seen.add(caption)
                n += 1
                out.append((lang, "wit", record["wit_ix"], caption))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("iglue", type=Path)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--wit", type=int, default=500)
    args = parser.parse_args()
    sys.stdout.write("lang\tsource\timage\tcaption\n")
    for row in rows(args.iglue, args.images, args.wit):
        sys.stdout.write("\t".join(row) + "\n")


if __name__ == "__main__":
    main()
