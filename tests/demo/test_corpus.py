"""The demo corpus generator (wit_builder.demo.corpus): determinism, held-out isolation, duplicates, distractors,
the pool stage 2 reads. (Its loopback server: tests/demo/test_server.py.)"""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pytest
from PIL import Image

from tests.demo.conftest import SMALL
from wit_builder.beam import fileio
from wit_builder.core.textnorm import tokenize
from wit_builder.demo import corpus as demo_corpus
from wit_builder.pairs.readers.formats import read_pool_file
from wit_builder.pairs.readers.layouts import PoolOptions


def test_same_config_gives_the_same_bytes(corpus, written, tmp_path):
    again = demo_corpus.generate(SMALL)
    assert again.files == corpus.files
    assert again.heldout == corpus.heldout
    assert again.rows == corpus.rows
    assert demo_corpus.write_files(again, tmp_path)["sha256"] == written[1]["sha256"]
    other = demo_corpus.generate(demo_corpus.CorpusConfig(**{**SMALL.__dict__, "seed": 1}))
    assert other.files["img/cat/cat-000.jpg"] != corpus.files["img/cat/cat-000.jpg"]


def test_every_class_has_its_images_and_a_caption_naming_it(corpus):
    photo = [c for c in corpus.classes if c not in demo_corpus.DRAWN_CLASSES]
    assert len(photo) >= 8, "scikit-image, scikit-learn and matplotlib sample photos should all be found"
    assert set(demo_corpus.DRAWN_CLASSES) <= set(corpus.classes)
    for cls in corpus.classes:
        rows = [r for r in corpus.rows if r.kind in ("train", "flood") and r.path.startswith(f"/img/{cls}/")]
        assert len(rows) == SMALL.train_per_class + (SMALL.flood_extra if cls == SMALL.flood_class else 0)
        assert all(cls in tokenize(r.caption) for r in rows), rows
        assert len(corpus.heldout[cls]) == SMALL.heldout_per_class
        for data in [corpus.files[r.path.lstrip("/")] for r in rows] + corpus.heldout[cls]:
            with Image.open(io.BytesIO(data)) as img:
                assert img.format == "JPEG" and SMALL.min_side <= max(img.size) <= SMALL.max_side


def test_heldout_images_are_never_served(corpus, written):
    folder, manifest = written
    served = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / demo_corpus.WWW).rglob("*") if p.is_file()}
    held = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / demo_corpus.HELDOUT).rglob("*.jpg")]
    assert len(held) == len(corpus.classes) * SMALL.heldout_per_class == len(set(held))
    assert served.isdisjoint(held)
    assert sorted(p.name for p in (folder / demo_corpus.HELDOUT).iterdir()) == corpus.classes


def test_duplicates_mirrors_and_near_duplicates(corpus):
    kinds = {k: [r for r in corpus.rows if r.kind == k] for k in demo_corpus.KINDS}
    train = {(r.path, r.caption) for r in kinds["train"]}
    assert len(kinds["duplicate_pair"]) == 2 and all((r.path, r.caption) in train for r in kinds["duplicate_pair"])
    train_bytes = {corpus.files[p.lstrip("/")] for p, _ in train}
    assert all(corpus.files[r.path.lstrip("/")] in train_bytes for r in kinds["mirror"])
    assert not any(corpus.files[r.path.lstrip("/")] in train_bytes for r in kinds["near_duplicate"])


def test_distractors_match_no_wordnet_lemma(corpus, wordnet_dir):
    lemmas = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (wordnet_dir / f"index.{pos}").read_text(encoding="utf-8").splitlines():
            if not line.startswith(" "):
                lemmas.update(line.split(" ", 1)[0].split("_"))
    distractors = [r.caption for r in corpus.rows if r.kind == "distractor"]
    assert len(distractors) == SMALL.distractors
    assert not [t for c in distractors for t in tokenize(c) if t in lemmas]
    assert all(cls in lemmas for cls in corpus.classes)


def test_pool_table_is_read_by_stage_2(corpus, tmp_path):
    records = demo_corpus.pool_records(corpus, "http://127.0.0.1:8765")
    path = str(tmp_path / "pool.parquet")
    fileio.write_parquet(path, pa.Table.from_pylist(records))
    items = list(read_pool_file(path, fileio.open_read, PoolOptions("auto", "url", "caption", 2048)))
    assert len(items) == len(corpus.rows)
    rejected = [i for i in items if hasattr(i, "reason")]
    assert sorted(i.reason for i in rejected) == sorted(["empty_caption", "data_uri", "non_http_url", "url_too_long"])
    assert {r["url"] for r in records if r["kind"] == "link_local"} == {demo_corpus.METADATA_URL}
    assert all(r["url"].startswith("http://127.0.0.1:8765/") for r in records if r["kind"] == "train")


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="min_side"):
        demo_corpus.CorpusConfig(min_side=8)
    with pytest.raises(ValueError, match="mirrors"):
        demo_corpus.CorpusConfig(train_per_class=2, mirrors=3)
