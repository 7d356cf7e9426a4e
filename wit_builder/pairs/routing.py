"""Each caption against its own language's queries (MetaCLIP 2's routing): one automaton per language of the run,
and the policy for captions whose language has none.

A run holds one queries folder per language (``inputs.QuerySet``); its query ids are one range per language
(languages in code order, entries sorted within each). A caption's language comes from ``langid``; then:

- a caption in a language the run keeps (``--languages``, else every folder's) is matched against that
  language's entries only, ids offset into the run's range: a German caption never matches English ``die``;
- ``und`` (the model is unsure, or the caption has no letter: product codes, names, "IMG_0042") is matched as
  English when English is kept (CLIP matched every alt text as English, and most short unsure alt text on the web
  is), else it is ``language_filtered``;
- every other caption, a language the run does not keep or has no queries for, is ``language_filtered``
  (counted per language); a caption in several languages is routed by its most probable one, as MetaCLIP 2
  routes by one LID label per text.

``--no-language-routing`` (one queries folder only) matches every caption against that folder, whatever its
language: CLIP's and MetaCLIP v1's language-blind rule, kept for reproducing them. Under ``normalized`` the captions
are segmented as stage 1 segmented the folder's queries (the folder's matcher is a ``QueryMatcher`` with its
language, below), so Japanese captions match segmented queries such as ``東京 タワー`` in this mode too, while text
without a spaceless-script character is ``textnorm``'s as before (English outputs are the old rule's).

Under ``normalized`` a caption holding a character of a script written without spaces is segmented by
``wit_builder.core.segment`` with its language (the segmenter of stage 1, so queries and captions split the
same way) and matched on token boundaries. Spaceless scripts ``core.segment`` does not cover (Javanese,
Balinese, Buginese, Tai Tham, Tai Le, New Tai Lue, Cham, Sundanese) fall back to ``textnorm``'s rule: a run of
their letters is one token, so only whole-run queries match; such captions are counted
(``unsegmented_script``), never dropped. Under ``metaclip`` the MetaCLIP 2 rule applies as published
(``metaclip_rule``: substrings for CJK/Thai/Lao/Khmer/Burmese/Tibetan entries).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit_builder.core.balance import ENGLISH
from wit_builder.pairs.langid import UNDETERMINED
from wit_builder.pairs.match_rules import NORMALIZED, check_rule
from wit_builder.pairs.matcher import QueryMatcher
from wit_builder.pairs.metaclip_rule import MetaClipMatcher

FILTERED = -1  # route of a caption no language of the run takes
# Spaceless scripts without a segmenter in core.segment (Unicode blocks): the documented textnorm fallback.
UNSEGMENTED_SCRIPTS = re.compile("[\uA980-\uA9DF\u1B00-\u1B7F\u1A00-\u1A1F\u1A20-\u1AAF\u1950-\u197F\u1980-\u19DF"
                                 "\uAA00-\uAA5F\u1B80-\u1BBF]")


def route(langs: Sequence[str], run_langs: Sequence[str], kept: Sequence[str], routing: bool = True) -> np.ndarray:
    """Per caption, the index in ``run_langs`` (the query files' languages) whose entries it is matched against,
    or :data:`FILTERED`: its own language when kept, English for ``und`` when English is kept; without
    ``routing`` (one file), every caption goes to the first."""
    if not routing:
        return np.zeros(len(langs), np.int64)
    index = {lang: i for i, lang in enumerate(run_langs) if lang in set(kept)}
    if ENGLISH in index:
        index[UNDETERMINED] = index[ENGLISH]
    return np.array([index.get(lang, FILTERED) for lang in langs], np.int64)


def unsegmented(texts: Sequence[str] | pa.Array) -> np.ndarray:
    """Mask of the texts holding a letter of a spaceless script no segmenter covers (the textnorm fallback).
    Strings, or an Arrow string array without nulls (only its non-ASCII rows are read into Python)."""
    if isinstance(texts, pa.Array):
        mask = np.zeros(len(texts), bool)
        others = np.flatnonzero(~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False))
        if len(others):
            mask[others] = unsegmented(texts.take(pa.array(others)).to_pylist())
        return mask
    search = UNSEGMENTED_SCRIPTS.search
    if search("\n".join(texts)) is None:  # one scan of the batch: such scripts are rare
        return np.zeros(len(texts), bool)
    return np.array([search(t) is not None for t in texts], bool)


class RoutedMatcher:
    """One matcher per language of the run over its slice of the run's entries; ``match`` routes and matches a
    batch of captions.

    Args:
        entries: the run's entries, languages one range after another (``inputs.load_entries``).
        sizes: distinct entries of each language (``QuerySet.sizes``).
        langs: the languages of those ranges (``QuerySet.langs``).
        kept: the languages captions are kept in (``QuerySet.languages``).
        rule: the match rule (``match_rules.MATCH_RULES``).
        routing: False matches every caption against the first (only) language's entries.
    """

    def __init__(self, entries: pa.Array, sizes: Sequence[int], langs: Sequence[str], kept: Sequence[str],
                 rule: str, routing: bool = True):
        check_rule(rule)
        self.langs, self.kept, self.routing = tuple(langs), tuple(kept), routing
        self.offsets = np.cumsum([0, *sizes])
        self.matchers: list[QueryMatcher | MetaClipMatcher | None] = []
        for i, lang in enumerate(self.langs):
            part = entries.slice(int(self.offsets[i]), int(sizes[i]))
            if lang not in self.kept or not len(part):
                self.matchers.append(None)
            else:
                self.matchers.append(QueryMatcher(part, lang) if rule == NORMALIZED
                                     else MetaClipMatcher(part.to_pylist()))

    def match(self, cleaned: pa.Array, raw: pa.Array, langs: Sequence[str]
              ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """(route of every caption, then per language with captions: (batch rows matched, ids per row, the run's
        query ids row after row)). ``cleaned``/``raw`` are the batch's captions, ``langs`` their languages."""
        routes = route(langs, self.langs, self.kept, self.routing)
        found = []
        for i, matcher in enumerate(self.matchers):
            if matcher is None:
                continue
            rows = np.flatnonzero(routes == i)
            if not len(rows):
                continue
            if len(rows) == len(routes):  # the whole batch (an English-heavy pool): no copy of its captions
                local, lengths, ids = matcher.match_ids(matcher.haystacks(cleaned, raw))
            else:
                take = pa.array(rows)
                local, lengths, ids = matcher.match_ids(matcher.haystacks(cleaned.take(take), raw.take(take)))
            if len(local):
                found.append((rows[local], lengths, ids + int(self.offsets[i])))
        return routes, found
