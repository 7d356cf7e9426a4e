"""The dataset card (DATASET.md) and its plots, rendered from stage 4's statistics.

Everything here is a pure function of ``stats.json``'s content and the per-query counts, so the card is
reproducible and can be re-rendered without rerunning the pipeline.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

# Bin edges (pixels) for the image size histogram; the last bin is open-ended.
SIZE_EDGES: tuple[int, ...] = (0, 64, 128, 256, 512, 1024, 2048, 4096)
TOP_QUERIES = 25


def size_bin(pixels: int | None) -> str:
    """The histogram bin label of one image side length ("256-511", "4096+", "unknown")."""
    if pixels is None:
        return "unknown"
    for low, high in zip(SIZE_EDGES, SIZE_EDGES[1:], strict=False):
        if low <= pixels < high:
            return f"{low}-{high - 1}"
    return f"{SIZE_EDGES[-1]}+"


def size_bin_labels() -> list[str]:
    """Every size bin's label, smallest first (the image-size plot's x axis)."""
    bounded = [f"{lo}-{hi - 1}" for lo, hi in zip(SIZE_EDGES, SIZE_EDGES[1:], strict=False)]
    return bounded + [f"{SIZE_EDGES[-1]}+", "unknown"]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # No date in the metadata, so the same data gives the same bytes.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def plot_image_sizes(histogram: Mapping[str, Mapping[str, int]]) -> bytes:
    """PNG: histogram of the final samples' original widths and heights (fixed bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = size_bin_labels()
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.4
    for i, side in enumerate(("width", "height")):
        counts = [histogram.get(side, {}).get(label, 0) for label in labels]
        ax.bar([x + (i - 0.5) * width for x in range(len(labels))], counts, width=width, label=f"original {side}")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_xlabel("pixels")
    ax.set_ylabel("samples")
    ax.set_title("Original image sizes of the final samples")
    ax.legend()
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def plot_query_counts(query_counts: Sequence[tuple[str, int, int]], cap: int | None) -> bytes:
    """PNG: samples per query before and after finalize, as rank plots on log-log axes, with the cap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for column, label in ((1, "entering finalize"), (2, "final")):
        values = sorted((n for row in query_counts if (n := int(row[column])) > 0), reverse=True)
        if values:
            ax.plot(range(1, len(values) + 1), values, label=label)
    if cap:
        ax.axhline(cap, color="grey", linestyle="--", label=f"cap {cap}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("query rank")
    ax.set_ylabel("samples")
    ax.set_title("Samples per query")
    if ax.get_legend_handles_labels()[0]:  # nothing to plot (no sample, no cap): no legend, no matplotlib warning
        ax.legend()
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "n/a"


def _language_lines(stats: Mapping[str, Any]) -> list[str]:
    """The card's per-language section (rows by stage 2's caption language), or nothing for rows without one."""
    langs = stats.get("languages") or {}
    if not langs:
        return []
    caps = (stats.get("settings") or {}).get("language_caps") or {}
    lines = ["## Per language", "", "Rows by the caption language stage 2 gave them (`lang`); the cap is each "
             "language's re-cap (MetaCLIP 2's per-language rule; none without `--per-query-cap`).", "",
             "| language | rows | final samples | over cap | cap |", "| --- | ---: | ---: | ---: | ---: |"]
    for lang, by_status in langs.items():
        lines.append(f"| {lang} | {sum(by_status.values())} | {by_status.get('success', 0)} | "
                     f"{by_status.get('over_cap', 0)} | {caps.get(lang, '')} |")
    return [*lines, ""]


def render_card(stats: Mapping[str, Any], query_counts: Sequence[tuple[str, int, int]]) -> str:
    """DATASET.md: sources, thresholds, counts per status, dedup rates and the per-query distribution."""
    settings, inputs, out, dedup = stats["settings"], stats["input"], stats["output"], stats["dedup"]
    rows = inputs["rows"]
    decontamination = f"pHash distance <= {settings['phash_distance']}" if settings.get("decontaminate") else "off"
    lines = [
        "# Dataset card",
        "",
        "WebImageText-style image-text pairs rebuilt with `wit` (queries from Wikipedia, pairs matched and",
        "balanced per query, images downloaded, then deduplicated and re-balanced here).",
        "",
        "## Sources",
        "",
        f"- Raw download shards: {inputs['raw_shards']} (`{settings['raw']}`), {rows} rows, {inputs['uids']} uids.",
        f"- Hashes: {stats['hash_sources'].get('raw', 0)} successes carried sha256/pHash from the download; "
        f"{stats['hash_sources'].get('stored_bytes', 0)} had them computed here from the stored (resized) bytes.",
    ]
    if settings.get("decontaminate"):
        lines.append(f"- Decontaminated against {settings['eval_images']} evaluation images in "
                     f"`{settings['decontaminate']}`.")
    lines += [
        "",
        "## Thresholds",
        "",
        "| setting | value |",
        "| --- | --- |",
        "| exact duplicates | same sha256 |",
        f"| near duplicates | pHash Hamming distance <= {settings['phash_distance']} |",
        f"| decontamination | {decontamination} |",
        f"| per-query cap | {settings['per_query_cap'] or 'none'} (seed {settings['seed']}) |",
        f"| samples per shard | {settings['samples_per_shard']} |",
        "",
        "## Counts per final status",
        "",
        "| status | rows | share |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {status} | {n} | {_pct(n, rows)} |" for status, n in stats["statuses"].items()]
    lines += ["", "Reasons behind the statuses:", "", "| reason | rows |", "| --- | ---: |"]
    lines += [f"| {reason} | {n} |" for reason, n in sorted(stats["reasons"].items())]
    candidates = dedup["candidates"]
    lines += [
        "",
        "## Deduplication",
        "",
        f"- Successful downloads entering dedup: {candidates}",
        f"- Exact duplicates: {dedup['exact_duplicates']} ({_pct(dedup['exact_duplicates'], candidates)})",
        f"- Near duplicates: {dedup['near_duplicates']} ({_pct(dedup['near_duplicates'], candidates)})",
        f"- Repeated uids (the same pair more than once in the raw input): {dedup['repeated_uids']}",
        "",
        "## Output",
        "",
        f"- {out['samples']} samples in {out['shards']} shards (`{{00000..{out['shards'] - 1:05d}}}.tar`)"
        if out["shards"] else "- no samples",
        "- `sizes.json` gives each shard's sample count; `{shard}.parquet` each shard's rows;",
        "  `accounting/rows/*.parquet` every raw row with its final status.",
        "",
        "![image sizes](image_sizes.png)",
        "",
        *_language_lines(stats),
        "## Per-query distribution",
        "",
    ]
    finals = [row[2] for row in query_counts if row[2] > 0]
    if finals:
        lines += [
            f"- Queries with at least one final sample: {len(finals)} "
            f"(of {sum(1 for row in query_counts if row[1] > 0)} entering finalize)",
            f"- Samples per query: min {min(finals)}, median {statistics.median(finals):g}, max {max(finals)}",
            "",
            f"Top {min(TOP_QUERIES, len(finals))} queries:",
            "",
            "| query | entering | final |",
            "| --- | ---: | ---: |",
        ]
        top = sorted(query_counts, key=lambda row: (-row[2], row[0]))[:TOP_QUERIES]
        lines += [f"| {_cell(q)} | {n_in} | {n_final} |" for q, n_in, n_final in top]
    else:
        lines.append("- No final sample carries a query.")
    lines += ["", "![samples per query](query_counts.png)", ""]
    return "\n".join(lines)
