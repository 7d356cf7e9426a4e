"""WordNet lemmas as query candidates, read with nltk's WordNetCorpusReader from a local WordNet 3.0 folder.

The folder holds WordNet's dict files (``data.noun``, ``index.noun``, ... as in Debian's ``wordnet-base``,
``/usr/share/wordnet``). Nothing is downloaded: ``nltk.download`` is never called. Debian's package lacks the
``lexnames`` file that nltk's reader insists on; it is WordNet 3.0's fixed list of the 45 lexicographer files,
so when the folder has none the reader is given that list.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections import defaultdict

from wit_builder.core.errors import InputError
from wit_builder.queries.selection import wordnet_query

REQUIRED_FILES = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv"))

_LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetError(InputError):
    """The WordNet folder is missing or not a WordNet 3.0 dict folder."""


def check_wordnet_dir(path: str) -> None:
    """Raise WordNetError unless ``path`` is a folder with WordNet's data and index files."""
    if not os.path.isdir(path):
        raise WordNetError(
            f"--wordnet-dir {path!r} is not a folder; install WordNet 3.0 (Debian: apt-get install wordnet-base, "
            "then use /usr/share/wordnet) or leave --wordnet-dir out to build no WordNet queries"
        )
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise WordNetError(f"--wordnet-dir {path!r} is not a WordNet dict folder: it lacks {', '.join(missing)}")


def _reader(path: str):
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class LocalWordNetReader(WordNetCorpusReader):
        def open(self, file):
            if file == "lexnames" and not os.path.isfile(os.path.join(path, "lexnames")):
                return io.StringIO(
                    "".join(f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))
                )
            return super().open(file)

        def map_wn(self, version="wordnet"):
            return None  # the map to other WordNet versions serves only the multilingual (OMW) data

        def tag_counts(self) -> dict[str, int]:
            """Sense key -> SemCor tag count, all of ``cntlist.rev`` at once (``Lemma.count()`` binary-searches
            the file once per lemma: 30 s for all of WordNet)."""
            counts = {}
            with self.open("cntlist.rev") as fp:
                for line in fp:
                    key, _, count = line.split()
                    counts[key] = int(count)
            return counts

    root = os.path.realpath(path)
    if root not in nltk.data.path:
        nltk.data.path.append(root)  # nltk only reads corpora from folders on its data path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": we need none
        return LocalWordNetReader(root, None)


@functools.lru_cache(maxsize=2)  # reading WordNet takes seconds; a process may build queries twice
def wordnet_candidates(path: str) -> list[tuple[str, float]]:
    """(normalized query, score) for every distinct WordNet lemma name (all parts of speech), sorted by query.

    ``score`` is WordNet's own frequency for the lemma: the sum of the SemCor tag counts (``cntlist.rev``) of
    all its sense keys. Lemma names that normalize alike ("ice_cream", "ice-cream") add up. Raises
    WordNetError for a bad folder.
    """
    check_wordnet_dir(path)
    try:
        wn = _reader(path)
        per_lemma: dict[str, int] = defaultdict(int)
        for sense_key, count in wn.tag_counts().items():
            per_lemma[sense_key.split("%", 1)[0]] += count  # "dog%1:05:00::" -> "dog"
        scores: dict[str, float] = defaultdict(float)
        for name in wn.all_lemma_names():
            query = wordnet_query(name)
            if query is not None:
                scores[query] += per_lemma.get(name, 0)
    except WordNetError:
        raise
    except Exception as err:  # nltk's parse errors of damaged dict files
        raise WordNetError(f"--wordnet-dir {path!r}: cannot read WordNet: {type(err).__name__}: {err}") from err
    if not scores:
        raise WordNetError(f"--wordnet-dir {path!r}: WordNet lists no lemma")
    return sorted(scores.items())
