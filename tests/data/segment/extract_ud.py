"""Make a sample of this folder from a Universal Dependencies CoNLL-U file (how the samples were made).

    python tests/data/segment/extract_ud.py ja_gsd-ud-test.conllu 300 > tests/data/segment/ja_gsd_test300.jsonl

One JSON object per sentence, in file order: ``sent_id``, ``text`` (the sentence as written), ``words`` (the
treebank's gold words as written: UniDic short units for Japanese, GSD words for Chinese, PUD words for Thai;
a multiword token such as German "im" is one word) and,
for Japanese, ``luw`` (long-unit words, joined from the ``LUWBILabel`` B/I marks in column MISC) and ``luw_pos``
(each long unit's ``LUWPOS``, e.g. 名詞-普通名詞-一般 for a common noun).
"""

from __future__ import annotations

import json
import sys


def sentences(path: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    meta: dict[str, str] = {}
    words: list[str] = []
    luw: list[str] = []
    luw_pos: list[str] = []
    skip: set[int] = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# sent_id = "):
                meta["sent_id"] = line[len("# sent_id = "):]
            elif line.startswith("# text = "):
                meta["text"] = line[len("# text = "):]
            elif not line:
                if words:
                    record: dict[str, object] = {"sent_id": meta["sent_id"], "text": meta["text"], "words": words}
                    if luw:
                        record["luw"], record["luw_pos"] = luw, luw_pos
                    out.append(record)
                meta, words, luw, luw_pos, skip = {}, [], [], [], set()
            elif not line.startswith("#"):
                cols = line.split("\t")
                if "." in cols[0]:  # an empty node: no text
                    continue
                if "-" in cols[0]:  # a multiword token (German "im" = "in dem"): its written form is the word
                    first, last = map(int, cols[0].split("-"))
                    words.append(cols[1])
                    skip = set(range(first, last + 1))
                    continue
                if int(cols[0]) in skip:
                    continue
                words.append(cols[1])
                misc = dict(m.split("=", 1) for m in cols[9].split("|") if "=" in m)
                label = misc.get("LUWBILabel", "")
                if label == "B" or (label == "I" and not luw):
                    luw.append(cols[1])
                    luw_pos.append(misc.get("LUWPOS", ""))
                elif label == "I":
                    luw[-1] += cols[1]
    return out


if __name__ == "__main__":
    for record in sentences(sys.argv[1])[: int(sys.argv[2])]:
        print(json.dumps(record, ensure_ascii=False))
