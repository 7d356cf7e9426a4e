"""``--engine img2dataset``: run img2dataset 1.47 on one url shard and convert its output to our raw rows.

img2dataset gets the shard's rows as a parquet (``url``, ``caption``, plus ``uid``/``queries`` through
``save_additional_columns``) and writes one webdataset shard of its own into a scratch folder; we re-key its
rows with our shard keys, map its statuses (``failed_to_resize`` -> ``failed_to_decode``) and add the pHash
of the stored image, so that stage 4 reads either engine's output the same way. What img2dataset does not
do stays undone (no per-host limits, no robots.txt, no TDMRep, no address checks, no EXIF orientation): that is the
point of offering the peer unchanged.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.download import RAW_STATUS_ALIASES, RAW_STATUSES
from wit_builder.core.dedup import image_phash
from wit_builder.download.fetch import USER_AGENT_TOKEN
from wit_builder.download.options import FetchConfig, ImageConfig
from wit_builder.download.raw_shards import RawSample, sample_key
from wit_builder.download.robots import DEFAULT_OPT_OUTS
from wit_builder.download.shard import base_row

INSTALL_HINT = "--engine img2dataset needs the img2dataset extra: pip install 'wit-builder[img2dataset]'"


def img2dataset_available() -> bool:
    """Whether img2dataset can be imported (the ``img2dataset`` extra)."""
    try:
        import img2dataset  # noqa: F401
    except ImportError:
        return False
    return True


def download_rows_img2dataset(rows: Sequence[dict[str, Any]], shard_id: int, rows_per_shard: int,
                              fetch: FetchConfig, image: ImageConfig, threads: int, workdir: str,
                              processes: int = 1) -> list[RawSample]:
    """One RawSample per input row, in row order; ``workdir`` is an empty local scratch folder.

    Raises RuntimeError with the install hint when img2dataset is missing. A row img2dataset loses (a crashed
    thread) is still returned, as ``failed_to_download``.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    try:
        from img2dataset import download
    except ImportError as e:
        raise RuntimeError(INSTALL_HINT) from e

    base = [base_row(row, sample_key(shard_id, i, rows_per_shard)) for i, row in enumerate(rows)]
    input_path = os.path.join(workdir, "input.parquet")
    output_dir = os.path.join(workdir, "out")
    pq.write_table(pa.Table.from_pylist(
        [{"url": r["url"], "caption": r["caption"] or "", "uid": r["uid"], "queries": r["queries"],
          "lang": r["lang"], "lang_score": r["lang_score"]} for r in base],
        schema=pa.schema([("url", pa.string()), ("caption", pa.string()), ("uid", pa.string()),
                          ("queries", pa.list_(pa.string())), ("lang", pa.string()), ("lang_score", pa.float32())]),
    ), input_path)
    download(
        url_list=input_path, input_format="parquet", url_col="url", caption_col="caption",
        save_additional_columns=["uid", "queries", "lang", "lang_score"], output_format="webdataset",
        output_folder=output_dir,
        processes_count=processes, thread_count=threads, number_sample_per_shard=max(len(rows), 1),
        image_size=image.image_size, resize_mode=image.resize_mode, encode_format=image.encode_format,
        encode_quality=image.encode_quality, min_image_size=image.min_image_size,
        max_aspect_ratio=image.max_aspect_ratio, max_image_area=image.max_image_pixels,
        timeout=int(max(1, round(fetch.read_timeout_s))), retries=fetch.retries,
        user_agent_token=USER_AGENT_TOKEN,
        disallowed_header_directives=sorted(DEFAULT_OPT_OUTS) if fetch.respect_x_robots_tag else [],
        compute_hash="sha256", extract_exif=False, enable_wandb=False, incremental_mode="incremental",
    )
    return _convert(base, output_dir, image.encode_format)


def _read_output(output_dir: str, ext: str) -> tuple[dict[int, dict[str, Any]], dict[int, bytes]]:
    """img2dataset's rows and stored images (``ext`` files of its tar), by its key: the row index in its shard."""
    theirs: dict[int, dict[str, Any]] = {}
    images: dict[int, bytes] = {}
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if name.endswith(".parquet"):
            for row in pq.read_table(path).to_pylist():
                theirs[int(row["key"])] = row
        elif name.endswith(".tar"):
            with tarfile.open(path) as tar:
                for member in tar:
                    stem, _, suffix = member.name.rpartition(".")
                    body = tar.extractfile(member) if suffix == ext and member.isfile() else None
                    if body is not None:  # None for anything but a regular file
                        images[int(stem)] = body.read()
    return theirs, images


def _convert(base: list[dict[str, Any]], output_dir: str, ext: str) -> list[RawSample]:
    """Join img2dataset's parquet and tar (its key = the row index within its single shard) onto our rows."""
    theirs, images = _read_output(output_dir, ext)
    samples = []
    for index, out in enumerate(base):
        row = theirs.get(index)
        if row is None:  # img2dataset lost the row (a crashed thread): account for it, never drop it
            samples.append(RawSample({**out, "status": "failed_to_download",
                                      "error_message": "img2dataset wrote no row for this url"}))
            continue
        status = RAW_STATUS_ALIASES.get(row["status"], row["status"])
        if status not in RAW_STATUSES:
            status = "failed_to_download"
        data = images.get(index) if status == "success" else None
        if status == "success" and data is None:
            status, row["error_message"] = "failed_to_download", "img2dataset stored no image for a success"
        out = {**out, "status": status, "error_message": row.get("error_message"),
               "width": row.get("width"), "height": row.get("height"),
               "original_width": row.get("original_width"), "original_height": row.get("original_height"),
               "sha256": row.get("sha256")}
        if data is not None:
            out["phash"] = image_phash(data)  # img2dataset re-encodes without EXIF, so no rotation applies
        samples.append(RawSample(out, data, ext if data is not None else None))
    return samples

