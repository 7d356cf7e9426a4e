"""WordNet lemmas as query candidates: WordNet 3.0 read with nltk's WordNetCorpusReader from a local folder
(``--wordnet-dir``), and the lemmas of Open Multilingual Wordnet tab files (``--omw-file``, ``omw_candidates``).

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
from collections.abc import Iterator

from wit_builder.core.errors import InputError
from wit_builder.core.languages import Language
from wit_builder.queries.selection import is_phrase_query, wordnet_query

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


# ISO 639-3 codes of Open Multilingual Wordnet files -> Wikipedia codes. MetaCLIP 2's ``wordnet_to_wiki``
# (metaclip/metadata/build_metadata.py, github.com/facebookresearch/MetaCLIP at f47f7841f6a9), plus the OMW 1.4 /
# CLDR / Wiktionary wordnets of other large Wikipedias.
OMW_TO_WIKI = {
    "fin": "fi", "heb": "he", "slv": "sl", "ita": "it", "nno": "nn", "nob": "no", "als": "als", "pol": "pl",
    "hrv": "hr", "nld": "nl", "ron": "ro", "arb": "ar", "isl": "is", "swe": "sv", "por": "pt", "cmn": "zh",
    "jpn": "ja", "dan": "da", "slk": "sk", "lit": "lt", "bul": "bg", "eus": "eu", "cat": "ca", "glg": "gl",
    "spa": "es", "ell": "el", "zsm": "ms", "ind": "id", "fra": "fr", "tha": "th",
    "eng": "en", "deu": "de", "kor": "ko", "hin": "hi", "rus": "ru", "fas": "fa", "tur": "tr", "vie": "vi",
    "ukr": "uk", "ces": "cs", "hun": "hu", "ben": "bn", "urd": "ur", "tam": "ta", "tel": "te", "mar": "mr",
    "khm": "km", "lao": "lo", "mya": "my", "bod": "bo", "yue": "zh-yue", "lzh": "zh-classical", "sqi": "sq",
    "hye": "hy", "kat": "ka", "kaz": "kk", "lav": "lv", "est": "et", "srp": "sr", "mkd": "mk", "bel": "be",
    "afr": "af", "swa": "sw", "tgl": "tl", "cym": "cy", "gle": "ga", "epo": "eo", "lat": "la",
}


def _omw_lines(path: str, lang: Language) -> Iterator[str]:
    """The lemmas of one OMW tab file, checked to be in ``lang`` (its header names the language)."""
    from wit_builder.beam import fileio

    if not fileio.exists(path):
        raise WordNetError(f"--omw-file {path!r} not found")
    with fileio.open_read(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
        try:
            header = text.readline()
            parts = header.lstrip("#").strip().split("\t")
            if not header.startswith("#") or len(parts) < 2:
                raise WordNetError(f"--omw-file {path!r} is not an Open Multilingual Wordnet tab file (its first "
                                   "line should be '# name<TAB>lang<TAB>url<TAB>licence')")
            code = parts[1].strip()
            wiki = OMW_TO_WIKI.get(code)
            if wiki is None or wiki != lang.code:
                said = f"{code} ({wiki})" if wiki else f"{code!r}, a language this table does not map to a Wikipedia"
                raise WordNetError(f"--omw-file {path!r} is in {said}, but the dump is {lang.code} ({lang.name})")
            for lineno, line in enumerate(text, start=2):
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 3 or "-" not in fields[0]:
                    if line.strip() and not line.startswith("#"):
                        raise WordNetError(f"--omw-file {path!r} line {lineno} is not 'offset-pos<TAB>type<TAB>"
                                           f"lemma': {line[:80]!r}")
                    continue
                if fields[1].rpartition(":")[2] == "lemma":
                    yield fields[2]
        except UnicodeDecodeError as err:
            raise WordNetError(f"--omw-file {path!r} is not UTF-8: {err}") from err


def omw_candidates(paths: list[str], lang: Language,
                   merged: list[tuple[str, float]] | tuple[tuple[str, float], ...] = ()) -> list[tuple[str, float]]:
    """(normalized query, score) of every lemma of Open Multilingual Wordnet tab files (OMW 1.4's
    ``wn-data-jpn.tab``, CLDR's ``wn-cldr-jpn.tab``: ``offset-pos<TAB>[lang:]lemma<TAB>text`` lines under a
    ``# name<TAB>lang<TAB>url<TAB>licence`` header), added to ``merged`` (WordNet 3.0's, when both are given).

    A lemma is normalized as the dump's text is (``core.segment.normalize`` in ``lang``; MetaCLIP 2 deletes the
    "+" that joins the parts of Japanese and Chinese lemmas, and so do we); its ``score`` is the number of
    synsets that list it (OMW has no frequencies; more senses, a more general word). Raises WordNetError for a
    missing file, a file that is not OMW's format or of another language than the dump's.
    """
    from wit_builder.core import segment

    scores: dict[str, float] = defaultdict(float, dict(merged))
    for path in paths:
        found = 0
        for lemma in _omw_lines(path, lang):
            query = segment.normalize(lemma.replace("_", " ").replace("+", ""), lang.code)
            tokens = query.split()
            if tokens and is_phrase_query(tokens):
                scores[query] += 1.0
                found += 1
        if not found:
            raise WordNetError(f"--omw-file {path!r} lists no lemma")
    return sorted(scores.items())
