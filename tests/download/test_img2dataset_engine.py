"""The img2dataset engine's conversion (wit_builder.download.img2dataset_engine), with img2dataset's download
replaced by a fake that writes its output layout: our keys, mapped statuses, no row ever lost. The real
engine runs end to end in test_command (slow)."""

from __future__ import annotations

import io
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import hostile_server as hs
from wit_builder.download import img2dataset_engine
from wit_builder.download.options import FetchConfig, ImageConfig
from wit_builder.download.raw_shards import sample_key

pytest.importorskip("img2dataset")


def fake_download(stored: bytes):
    """img2dataset.download writing one shard: row 0 a success, 1 failed_to_resize, 2 a success without its
    image in the tar, 3 no row at all (a crashed thread)."""

    def download(url_list, output_folder, **kwargs):
        inputs = pq.read_table(url_list).to_pylist()
        assert [r["uid"] for r in inputs] == ["u0", "u1", "u2", "u3"] and kwargs["timeout"] == 2
        os.makedirs(output_folder)
        rows = [{"key": "000000000", "status": "success", "error_message": None, "width": 8, "height": 8,
                 "original_width": 16, "original_height": 16, "sha256": "ab" * 32},
                {"key": "000000001", "status": "failed_to_resize", "error_message": "cannot decode",
                 "width": None, "height": None, "original_width": None, "original_height": None, "sha256": None},
                {"key": "000000002", "status": "success", "error_message": None, "width": 8, "height": 8,
                 "original_width": 8, "original_height": 8, "sha256": "cd" * 32}]
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(output_folder, "00000.parquet"))
        with tarfile.open(os.path.join(output_folder, "00000.tar"), "w") as tar:
            info = tarfile.TarInfo("000000000.jpg")
            info.size = len(stored)
            tar.addfile(info, io.BytesIO(stored))

    return download


def test_img2dataset_output_becomes_our_rows_under_our_keys(tmp_path, monkeypatch):
    import img2dataset

    stored = hs.jpeg()
    monkeypatch.setattr(img2dataset, "download", fake_download(stored))
    rows = [{"uid": f"u{i}", "url": f"http://h/{i}.jpg", "caption": f"c{i}", "queries": ["q"]} for i in range(4)]
    samples = img2dataset_engine.download_rows_img2dataset(rows, 5, 10, FetchConfig(timeout_s=2.0), ImageConfig(),
                                                           threads=2, workdir=str(tmp_path))
    assert [s.row["key"] for s in samples] == [sample_key(5, i, 10) for i in range(4)]
    assert [s.row["uid"] for s in samples] == ["u0", "u1", "u2", "u3"]
    assert [s.row["status"] for s in samples] == ["success", "failed_to_decode", "failed_to_download",
                                                  "failed_to_download"]
    assert samples[0].image == stored and samples[0].image_ext == "jpg" and len(samples[0].row["phash"]) == 16
    assert samples[2].row["error_message"] == "img2dataset stored no image for a success"
    assert samples[3].row["error_message"] == "img2dataset wrote no row for this url"
    assert img2dataset_engine.img2dataset_available()
