# The user's entry points. Every target creates the virtual environment and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WIT    := $(BIN)/wit
STAMP  := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE := disabled

# Defaults for the user-facing stage targets (override on the command line).
WORDNET    ?= /usr/share/wordnet
ENWIKI      = $(shell $(BIN)/python -c "import gensim, os; print(os.path.join(os.path.dirname(gensim.__file__), 'test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2'))" 2>/dev/null)
DUMP       ?= $(ENWIKI)
BEAM_ARGS  ?= --runner=FnApiRunner

.PHONY: demo test test-fast typecheck lint install wordnet build-queries build-pairs download finalize train \
        bench bench-queries bench-match bench-download bench-train bench-segment bench-scale bench-retry \
        bench-gallery runners clean

# Conventions of the stage targets: OUT is always the target's output (a folder, or a file for eval/export);
# every input variable may hold several paths or globs, separated by spaces: each is passed quoted, unexpanded,
# as its own repeated flag (the command expands globs itself, also on gs:// and s3://).
quote_each = $(foreach v,$(2),$(1) '$(v)')
comma := ,

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,img2dataset,test,bench]'
	touch $(STAMP)

install: $(STAMP)

# WordNet 3.0 dict files from Debian, installed when we are allowed to (root with apt-get).
wordnet:
	@if [ ! -d $(WORDNET) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq wordnet-base || (apt-get update -qq && apt-get install -y -qq wordnet-base)) >/dev/null; fi
	@[ -d $(WORDNET) ] || echo "note: $(WORDNET) not found; install Debian's wordnet-base for WordNet queries"

## The README's first command: the main job end to end on the bundled default data.
## make demo LANGUAGES=en,ja: the same chain in English and Japanese (outputs in out/demo-en-ja).
LANGUAGES ?= en
demo: $(STAMP) wordnet
	$(WIT) demo $(if $(filter en,$(LANGUAGES)),--out out/demo,--out out/demo-$(subst $(comma),-,$(LANGUAGES)) \
	  --languages $(LANGUAGES)) $(BEAM_ARGS)

## The README's second command. --dist loadgroup: the Spark and Flink tests share one worker (one cluster).
test: $(STAMP) wordnet runners
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 -q --dist loadgroup

## Beam's Spark and Flink job servers from Maven Central (cached in ~/.m2): runners/build/beam-*-job-server.jar.
## Use: --runner=SparkRunner --spark_job_server_jar=runners/build/beam-spark-job-server.jar (or Flink's).
RUNNER_JARS := runners/build/beam-spark-job-server.jar runners/build/beam-flink-job-server.jar
runners: $(RUNNER_JARS)
$(RUNNER_JARS) &: runners/pom.xml runners/fetch.py $(STAMP)
	@if command -v mvn >/dev/null && command -v java >/dev/null; then $(BIN)/python runners/fetch.py \
	  || echo "note: make runners failed; the Spark and Flink tests fetch the jars again and say why"; \
	  else echo "note: Java 17 and Maven are needed for the Spark and Flink runners (apt-get install maven)"; fi

## Everything but the tests marked slow (full Beam runs in multi-processing mode, servers, training).
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 -q -m "not slow"

typecheck: $(STAMP)
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check .

build-queries: OUT = out/queries
build-queries: $(STAMP) wordnet
	$(WIT) build-queries $(call quote_each,--dump,$(DUMP)) --out '$(OUT)' \
	  $(if $(wildcard $(WORDNET)),--wordnet-dir $(WORDNET)) $(QUERY_ARGS) $(BEAM_ARGS)

# make build-pairs POOL='crawl/*.warc.wat.gz laion/*.parquet' [QUERIES='out/queries-en out/queries-ja'] [OUT=out/pairs] [PAIRS_ARGS=...]
build-pairs: OUT = out/pairs
build-pairs: QUERIES ?= out/queries
build-pairs: $(STAMP)
	@[ -n "$(POOL)" ] || { echo "make build-pairs: set POOL to the candidate pool files or globs"; exit 2; }
	$(WIT) build-pairs $(call quote_each,--queries,$(QUERIES)) $(call quote_each,--pool,$(POOL)) --out '$(OUT)' $(PAIRS_ARGS) $(BEAM_ARGS)

# make download [PAIRS='out/pairs more/*.parquet'] [OUT=out/raw] [DOWNLOAD_ARGS=...]
download: OUT = out/raw
download: PAIRS ?= out/pairs
download: $(STAMP)
	$(WIT) download $(call quote_each,--pairs,$(PAIRS)) --out '$(OUT)' $(DOWNLOAD_ARGS) $(BEAM_ARGS)

# make finalize RAW=out/raw OUT=out/final [FINALIZE_ARGS="--per-query-cap 20000 --decontaminate DIR"]
finalize: OUT = out/shards
finalize: $(STAMP)
	@[ -n "$(RAW)" ] || { echo "usage: make finalize RAW=<download output dir or glob> OUT=<dir>"; exit 2; }
	$(WIT) finalize $(call quote_each,--raw,$(RAW)) --out '$(OUT)' $(FINALIZE_ARGS) $(BEAM_ARGS)

# make train [SHARDS=out/demo/shards] [OUT=out/train] [TRAIN_ARGS=...]; TRAIN_OUT= is an alias of OUT here
SHARDS ?= out/demo/shards
TRAIN_OUT ?= out/train
CHECKPOINT ?= $(TRAIN_OUT)
train: OUT = $(TRAIN_OUT)
train: $(STAMP)
	$(WIT) train --shards '$(SHARDS)' --out '$(OUT)' --model tiny --batch-size 64 --steps 300 $(TRAIN_ARGS)

# make eval ZEROSHOT=DIR/<class>/*.jpg [RETRIEVAL=held-out shards] [CHECKPOINT=out/train] [OUT=CHECKPOINT/eval.json]
# A previous results file is kept (renamed with its date), never silently overwritten.
.PHONY: eval export
eval: OUT = $(CHECKPOINT)/eval.json
eval: $(STAMP)
	@[ -n "$(ZEROSHOT)$(RETRIEVAL)" ] || { echo "usage: make eval ZEROSHOT=<DIR/<class>/*.jpg> and/or RETRIEVAL=<shards>"; exit 2; }
	@if [ -e '$(OUT)' ]; then kept='$(basename $(OUT))'-$$(date -r '$(OUT)' +%Y%m%dT%H%M%S)'$(suffix $(OUT))'; \
	  mv '$(OUT)' "$$kept" && echo "make eval: $(OUT) exists; the previous results are kept as $$kept"; fi
	$(WIT) eval --checkpoint '$(CHECKPOINT)' $(if $(ZEROSHOT),--zeroshot '$(ZEROSHOT)') \
	  $(call quote_each,--retrieval,$(RETRIEVAL)) --out '$(OUT)' $(EVAL_ARGS)

# open_clip weights of a ViT checkpoint: OUT=CHECKPOINT/open_clip/wit-model.pt beside wit-<model>.json and -tokenizer/
export: OUT = $(CHECKPOINT)/open_clip/wit-model.pt
export: $(STAMP)
	$(WIT) export --checkpoint '$(CHECKPOINT)' --out '$(OUT)' $(EXPORT_ARGS)

bench: bench-queries bench-match bench-download bench-train bench-segment

bench-queries: $(STAMP)
	$(BIN)/python benchmarks/bench_queries.py

bench-match: $(STAMP)
	$(BIN)/python benchmarks/bench_match.py

bench-download: $(STAMP)
	$(BIN)/python benchmarks/bench_download.py

bench-train: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py

bench-retry: $(STAMP)
	$(BIN)/python benchmarks/bench_retry.py

bench-gallery: $(STAMP)
	$(BIN)/python benchmarks/bench_gallery.py

# word segmenters side by side (ICU vs MeCab-UniDic, jieba, newmm): needs the [bench] extra
bench-segment: $(STAMP)
	$(BIN)/python benchmarks/segmenters.py

# memory against input size: build-pairs in-process at 0.5M/2M/8M captions (growth exponent), finalize on generated
# raw shards and a 20k near-identical cluster, build-queries' sketches at two widths; then in-process vs Spark
bench-scale: $(STAMP) runners
	$(BIN)/python benchmarks/bench_scale.py --runners fnapi --texts 500000,2000000,8000000 --stages pairs,finalize,sketch
	$(BIN)/python benchmarks/bench_scale.py --runners fnapi,spark --label spark
	$(BIN)/python benchmarks/bench_spill_refs.py

clean:
	rm -rf out build *.egg-info
