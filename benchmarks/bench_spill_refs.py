"""Memory of the file references of a spilled shuffle (wit_builder/beam/spill.py) in the in-process FnApiRunner:
one reference per (file, bucket) through a GroupByKey, as the spill had them before, against one reference per
file (a file indexed by bucket, the references a side input), at the same files x buckets.

    .venv/bin/python benchmarks/bench_spill_refs.py [--files 400] [--buckets 1000]

A spilled shuffle of N rows writes F = N x (encoded bytes per row) / FLUSH_BYTES files over B = N / 10,000 buckets
(finalize's ``ROWS_PER_BUCKET``): 10M rows of ~340 encoded bytes are F ~ 400 files and B = 1,000 buckets, so the
defaults stand for one shuffle at 10M rows. Each mode runs in its own process (kernel peak RSS, VmHWM, of that
process; a baseline process with no references is subtracted): ``grouped`` puts F x B (bucket, "PATH@OFFSET+LEN")
pairs through ``beam.GroupByKey`` and counts them per bucket; ``indexed`` writes F real spill files of one
element per bucket (``GroupByKeySpilled``, FLUSH_BYTES set so each file holds B elements) and groups every bucket.
Each mode checks that every element (reference) came out of its grouping once. Results to stdout and
out/bench_spill_refs/results.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(mode: str, files: int, buckets: int) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from wit_builder.beam import spill

    options = PipelineOptions(["--runner=FnApiRunner"])
    folder = tempfile.mkdtemp(prefix="bench_spill_refs_")

    def grouped_refs(_):
        for i in range(files * buckets):
            yield i % buckets, f"{folder}/uid/{i // buckets:032x}.bin@{(i % buckets) * 3400}+3400"

    def elements(_):
        for i in range(files * buckets):  # bucket_of below: element i goes to bucket i % buckets
            yield i, i // buckets

    started = time.process_time()
    with beam.Pipeline(options=options) as p:
        if mode == "grouped":
            grouped = p | beam.Create([0]) | beam.FlatMap(grouped_refs) | beam.GroupByKey()
        elif mode == "indexed":
            spill.FLUSH_BYTES = buckets * 16  # ~16 encoded bytes per element: a file per ~`buckets` elements
            grouped = (p | beam.Create([0]) | beam.FlatMap(elements)
                       | spill.GroupByKeySpilled(spill.Spill(folder), "uid", buckets, lambda key: key % buckets))
        else:
            grouped = p | beam.Create([(0, [0])])
        total = Path(f"{folder}.total")
        _ = (grouped | beam.Map(lambda kv: len(list(kv[1]))) | beam.CombineGlobally(sum)
             | beam.Map(lambda n: total.write_text(str(n))))
    written = len(list(Path(folder).rglob("*.bin")))
    shutil.rmtree(folder)
    values = int(total.read_text())
    total.unlink()
    if values != (files * buckets if mode != "none" else 1):  # every element (or reference) grouped once
        raise SystemExit(f"{mode}: {values} values grouped, expected {files * buckets}")
    refs = {"none": 0, "grouped": files * buckets, "indexed": written}[mode]
    print(json.dumps({"mode": mode, "references": refs, "spill_files": written,
                      "cpu_seconds": round(time.process_time() - started, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--buckets", type=int, default=1000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_spill_refs")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.files, args.buckets)
        return 0
    results = []
    for mode in ("none", "grouped", "indexed"):
        line = subprocess.run([sys.executable, __file__, "--child", mode, "--files", str(args.files),
                               "--buckets", str(args.buckets)], check=True, capture_output=True, text=True,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout.strip().splitlines()[-1]
        results.append(json.loads(line))
    base = results[0]["peak_rss_mb"]
    for row in results[1:]:
        row["over_baseline_mb"] = row["peak_rss_mb"] - base
        row["bytes_per_reference"] = round(row["over_baseline_mb"] * 2**20 / max(1, row["references"]))
    for row in results:
        print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
