"""Stage 1, ``wit build-queries``: MediaWiki dumps (+ pageview files, WordNet) -> the query list.

    --dump FILES (.xml, .xml.bz2, multistream + index), --wiki LANG.wikipedia, --pageviews FILES,
    --wordnet-dir DIR, --omw-file FILES
      ─► OUT/queries.parquet (schemas.queries.QUERIES, one language: ``lang``), queries.txt, stats.json (written last)
    options.py      the settings (one frozen dataclass tree: thresholds, budgets, reading, traffic groups)
    command.py      the stage for the launcher: the text cache removed whether the run succeeds, stats.json
    inputs.py       what the flags name, resolved before work: dumps with their indexes and language, pageview files,
                    WordNet / OMW lemmas
    wikidump.py, wikitext.py, parse_budget.py   pages out of dumps; a page's plain text and links, under a budget
    pages.py        what one page gives: text, links, a title query, a redirect, or a Drop with its reason
    ngram_sketch.py, selection.py   pass 1 sketches, pass 2 exact counts; candidates, ranking, budgets, select
    titles.py, pageviews.py, wordnet.py   title traffic (redirects land on targets); pageview files; lemmas
    stats.py        the count names, stats.json's document, the summary line, why a run has nothing to build
    pipeline.py     the Beam wiring (the only module here that imports Beam)

Decisions and where they are made (decision -> module):

- reading ``.xml``, ``.xml.bz2``, multistream + ``-index.txt[.bz2]`` (each dump paired with the index beside it);
  ranges of whole bz2 streams read with a seek; flat memory; export schemas 0.3 to 0.11 (no ``<ns>``: namespace
  from the title prefix and ``<siteinfo>``'s list; redirects from ``#REDIRECT`` text), history dumps (latest
  revision, one revision in memory), UTF-16 files; ``DumpError`` naming file, byte offset, XML line/column and
  the last whole page read (also for truncation) -> ``wikidump.py`` (``dump_inputs``, ``plan_ranges``,
  ``read_pages``)
- the dumps' language: ``--wiki`` or each dump's ``<siteinfo>`` (dbname, base), one per run; unknown, missing or
  contradicting is exit 2 before work -> ``inputs.dump_language``, ``wit_builder/core/languages.py``
- a truncated multistream dump whose index lists streams at or past the end of the file -> ``wikidump.plan_ranges``
- only namespace 0, non-redirect pages are text; a redirect gives its target; a page without title/ns/id, over
  the parse budget or refused by the parser is a bad record (an example with file, offset, id, title, why);
  disambiguation pages and titles without a letter give text but no title query; each reason is a ``Drop`` the
  frame counts -> ``pages.py`` (``judge_page``, ``SKIP_REASONS``)
- what plain text keeps (link labels, headings, formatting tags) and drops (templates, refs, tables, files,
  categories, interwiki, comments), rendered from mwparserfromhell's token stream; tables in every form dropped
  before tokenizing; markup the tokenizer leaves as text scrubbed after; 2 MiB page limit; link targets;
  disambiguation pages; canonical titles; a wiki's language (``Site``, ``site_rules``): localized File/Media/
  Category names and aliases (MediaWiki's table + the dump's ``<siteinfo>``), gallery lines, behaviour switches;
  Chinese converter markup (``resolve_converter``); an early-closed template's tail -> ``wikitext.py``
- per-page parse budget: the parser runs in a helper process, killed and restarted when a page takes more than
  ``--parse-timeout`` seconds (default 5) or more memory than ``--parse-memory-mb`` (default 2048); works in any
  thread (no signals) -> ``parse_budget.py``
- count-min sketch (deterministic hashing, mergeable); the (unigram, bigram) pair of a bundle, moved as 1 MiB
  chunks keyed by their place and rebuilt from the chunks summed per place, or in-process as a file (summed in
  place, memory-mapped in pass 2) -> ``ngram_sketch.py``
- tokens and normalization (shared with stage 2): words of scripts without spaces segmented -> ``wit_builder/core/
  segment.py`` (``textnorm.py`` below it); pass 1 caches the tokens, pass 2 reads them -> ``pipeline.py``
- bigrams within a line; eligibility; NPMI and why; title and WordNet scores; ``count`` per source; ranking and
  tie-breaks; budgets, MetaCLIP defaults, scaling to ``--max-queries``; no duplicates across sources; the best
  ``budget + budgets of the sources before it`` candidates per source are all selection can need; which n-grams
  pass 2 counts exactly, the one- and two-token titles and lemmas among them; MetaCLIP 2's per-language budgets
  (``language_budgets``) and the one-character rule per script (``is_one_character_query``) -> ``selection.py``
- the number of distinct tokens (k minimum values) -> ``ngram_sketch.DistinctSketch``
- a redirect's traffic (pageviews or inlinks) lands on its target (the smallest target when a dump names
  several); an article's score is its landed traffic -> ``titles.py``, joined by ``pipeline.ScoreTitles``
- pageview files: hourly ``pageviews-*`` / ``pagecounts-*`` lines and daily / monthly ``pageview_complete`` lines,
  told apart per line; any project (``--wiki``, default ``en.wikipedia``) and sites (``--pageview-sites``, default
  desktop + mobile) -> ``pageviews.py`` (``Traffic``, ``read_pageviews``)
- WordNet lemmas via nltk's ``WordNetCorpusReader`` from ``--wordnet-dir``, no download; Open Multilingual Wordnet
  tab files of the dump's language (``--omw-file``); a bad folder or file fails before any output -> ``wordnet.py``
- the settings: one frozen tree whose groups are the rules' own configs (``Thresholds``, ``Budgets``,
  ``ReadOptions``, ``Traffic``); a bad value names its flag; stats.json's ``parameters`` flat, as the flags are
  -> ``options.py``
- why a run has nothing to build from (every page rejected: the counts and the first rejected page; no article;
  pageview files without a row for ``--wiki``); every count of stats.json (``COUNT_NAMES``, counted as data by
  the frame and summed into ``OUT/_counts.json``); what is not a count (rejected pages, the traffic source and its
  per-file table) in a details file; the stats document and the summary line -> ``stats.py``
- the Beam graph: ``BuildQueries`` of ``ReadDumps``, ``MergeSketches``, ``TitleTraffic``, ``TitleCandidates``,
  ``CountKept``, ``ScoreBigrams``, ``Best``, ``SelectAndWrite``, ``WriteCounts``; counters in the
  ``build_queries`` namespace (monitoring only) -> ``pipeline.py``
- the text cache (``OUT/_tmp_text``) removed whether the run succeeds or not; a failed run says no output was
  written; stats.json written last -> ``command.py`` (``BuildQueriesStage``)

Bad input: a malformed XML stream, a truncated or corrupt bz2 stream, an unreadable index and a run with no
article text fail the run before anything is written (exit 1; when every page was rejected it says so, with the
counts per reason and the first rejected page); so do a pageview file of which no line can be read and pageview
files with no row for the chosen project. Bad pages (``pages_malformed``, ``pages_wikitext_rejected``,
``pages_parse_timeout``), empty dumps (``dump_ranges_empty``) and malformed pageview lines are counted and the run
completes; a missing or invalid WordNet folder or a ``--dump`` that matches nothing exits 2 before the pipeline.
"""
