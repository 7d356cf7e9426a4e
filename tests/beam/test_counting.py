"""Counts as data (wit_builder.beam.counting): a rule's Drop counted under its reason by the frame (RuleDoFn,
CountingDoFn.judge), the per-bundle tallies summed into ``_counts.json`` (WriteCounts, read_counts) exactly once
per record, even when a bundle is retried; Beam metrics only for monitoring."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import BEAM_IN_PROCESS
from wit_builder.beam import counting, launcher
from wit_builder.beam.counting import COUNTS, COUNTS_FILE, DROPPED, CountingDoFn, Drop, RuleDoFn, WriteCounts


def beam_pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(options=launcher.pipeline_options(BEAM_IN_PROCESS))


def summed(counts):
    """A COUNTS output summed by name (bundles emit their own tallies)."""
    return counts | "SumCounts" >> beam.CombinePerKey(sum)


def words_of(line: str, shortest: int) -> Iterator[str | Drop]:
    """A pure rule: each word of ``line``; an empty line and words shorter than ``shortest`` are dropped."""
    if not line:
        yield Drop("empty_line")
        return
    for word in line.split():
        yield word if len(word) >= shortest else Drop("short_word", record=word)


def test_rule_dofn_counts_every_drop_under_its_reason_and_passes_the_rest_on():
    lines = ["a cat sat", "", "on the mat", "", "mat"]
    with beam_pipeline() as p:
        out = p | beam.Create(lines) | beam.ParDo(
            RuleDoFn(words_of, 3, kept_as="words", keep_dropped=True, namespace="probe")
        ).with_outputs(COUNTS, DROPPED, main="words")
        assert_that(out.words, equal_to(["cat", "sat", "the", "mat", "mat"]), label="Words")
        assert_that(out[DROPPED], equal_to([Drop("empty_line"), Drop("empty_line"), Drop("short_word", "a"),
                                            Drop("short_word", "on")]), label="Dropped")
        assert_that(summed(out[COUNTS]), equal_to([("words", 5), ("empty_line", 2), ("short_word", 2)]),
                    label="Counts")


def test_rule_dofn_without_kept_as_counts_only_the_drops_and_keeps_no_drop_values():
    with beam_pipeline() as p:
        out = p | beam.Create(["a cat", ""]) | beam.ParDo(RuleDoFn(words_of, 2)).with_outputs(COUNTS, DROPPED,
                                                                                          main="words")
        assert_that(out.words, equal_to(["cat"]), label="Words")
        assert_that(out[DROPPED], equal_to([]), label="NoDropValues")
        assert_that(summed(out[COUNTS]), equal_to([("empty_line", 1), ("short_word", 1)]), label="Counts")


class _JudgeLengths(CountingDoFn):
    """A DoFn of its own that asks a rule for a verdict per element and lets the frame count the drops."""

    namespace = "probe"

    def process(self, word: str) -> Iterator[str]:
        self.counter("seen").inc()
        if self.judge(Drop("too_long") if len(word) > 4 else word):
            yield word


def test_judge_counts_a_drop_under_its_reason_and_keeps_anything_else():
    with beam_pipeline() as p:
        out = p | beam.Create(["cat", "giraffe", "ox", "elephant"]) | beam.ParDo(_JudgeLengths()).with_outputs(
            COUNTS, main="kept")
        assert_that(out.kept, equal_to(["cat", "ox"]), label="Kept")
        assert_that(summed(out[COUNTS]), equal_to([("seen", 4), ("too_long", 2)]), label="Counts")
    dofn = _JudgeLengths()
    dofn.start_bundle()
    assert dofn.judge(Drop("too_long", record="giraffe")) is False
    assert dofn.judge("cat") is True and dofn.judge(None) is True and dofn.judge(0) is True  # any value but a Drop
    assert [t.value.value for t in dofn.finish_bundle()] == [("too_long", 1)]
    assert list(dofn.finish_bundle()) == []  # the tally starts again after each bundle


def test_write_counts_sums_into_one_file_that_read_counts_reads_once(tmp_path):
    path = str(tmp_path / COUNTS_FILE)
    with beam_pipeline() as p:
        _ = p | beam.Create([("rows", 3), ("bad_url", 1), ("rows", 4)]) | WriteCounts(path)
    assert (tmp_path / COUNTS_FILE).read_text() == '{\n  "bad_url": 1,\n  "rows": 7\n}\n'
    assert counting.read_counts(str(tmp_path), ["rows", "too_long"]) == {"bad_url": 1, "rows": 7, "too_long": 0}
    assert not (tmp_path / COUNTS_FILE).exists()  # every run writes its own


def test_a_run_that_counted_nothing_still_writes_its_counts(tmp_path):
    with beam_pipeline() as p:
        _ = p | beam.Create([]) | WriteCounts(str(tmp_path / COUNTS_FILE))
    assert counting.read_counts(str(tmp_path), ["rows"]) == {"rows": 0}


def test_counts_are_data_exact_when_a_bundle_is_retried(tmp_path):
    """A DoFn that fails once: the runner retries the bundle; metrics count it twice, the COUNTS output once."""
    flag = tmp_path / "failed-once"

    class Flaky(counting.CountingDoFn):
        namespace = "probe"

        def process(self, x):
            self.count("seen")
            self.count("even", x % 2 == 0)
            if x == 3 and not flag.exists():
                flag.touch()
                raise RuntimeError("lost on purpose")
            yield x

    pipeline = beam.Pipeline(options=launcher.pipeline_options(["--runner=BundleBasedDirectRunner"]))
    result = pipeline | beam.Create(list(range(10))) | beam.ParDo(Flaky()).with_outputs(counting.COUNTS, main="rows")
    _ = result[counting.COUNTS] | counting.WriteCounts(str(tmp_path / counting.COUNTS_FILE))
    run = pipeline.run()
    run.wait_until_finish()
    assert flag.exists()
    assert counting.read_counts(str(tmp_path), ["odd"]) == {"even": 5, "odd": 0, "seen": 10}
    assert counting.counters(run, "probe")["seen"] > 10  # what stats read from metrics would have said
