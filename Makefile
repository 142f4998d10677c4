# Multilabel text classification pipeline: scrape -> prepare -> train -> compress -> serve.
# `make help` lists the targets. Every target installs into .venv first (a no-op when nothing changed).
SHELL := /bin/bash
PY := .venv/bin/python
NAME ?= books
DATA ?= data/sample/books.csv
PROCESSED := data/processed/$(NAME)
MODEL := models/$(NAME)
BUNDLE := $(MODEL)/bundle
SPARK_ENV := build/spark-env.tar.gz
PORT ?= 5000
HOST ?= 127.0.0.1
TRAIN_ARGS ?= --time-budget 8m
COMPRESS_ARGS ?=
CORRECTIONS ?= data/corrections/$(NAME).jsonl
RETRAINED ?= $(MODEL)-retrained
RETRAIN_DATA ?= $(PROCESSED)-retrained
RETRAIN_ARGS ?= --time-budget 5m
PROMOTE_ARGS ?=
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help install system-deps run test test-fast test-slow prepare train compress serve serve-prod gradio \
        predict predict-spark spark-env scrape-urls scrape-details notebooks bench bench-accuracy bench-train-speed \
        bench-scrape bench-serve bench-prepare bench-spark bench-windows bench-explain bench-memory bench-combine bench-feedback \
        bench-consistency retrain serve-registry models clean

help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: NAME=$(NAME) DATA=$(DATA) PORT=$(PORT) TRAIN_ARGS='$(TRAIN_ARGS)' RETRAIN_ARGS='$(RETRAIN_ARGS)'"

install: ## create .venv and install everything (idempotent)
	@bash scripts/install.sh

system-deps: ## Debian packages for the browser test (chromium; needs root)
	@bash scripts/install-system.sh

run: install $(BUNDLE)/bundle.json ## sample data -> trained model -> int8 bundle -> web site (http://127.0.0.1:5000)
	@echo "Gradio app: make gradio NAME=$(NAME)   |   production: make serve-prod NAME=$(NAME)"
	$(PY) -m flask_app --bundle $(BUNDLE) --host $(HOST) --port $(PORT)

# The three stages as file rules: each recipe is written once, here. `install` is order-only: it runs first but
# never makes a stage's output out of date.
$(PROCESSED)/dataset.csv: $(DATA) | install
	$(PY) -m training.prepare --input $(DATA) --out $(PROCESSED) --min-label-freq 0.01

$(MODEL)/metrics.json: $(PROCESSED)/dataset.csv | install
	$(PY) -m training.train --data $(PROCESSED) --out $(MODEL) $(TRAIN_ARGS)

$(BUNDLE)/bundle.json: $(MODEL)/metrics.json | install
	$(PY) -m compression.quantize --model $(MODEL) --out $(BUNDLE) $(COMPRESS_ARGS)

# One step on demand, through the file rule above: the earlier steps run only when their output is missing or
# out of date; then -W makes make treat the step's input as just changed, so the step itself always runs.
prepare: ## clean, deduplicate and split DATA into data/processed/NAME
	@$(MAKE) --no-print-directory -W $(DATA) $(PROCESSED)/dataset.csv

train: $(PROCESSED)/dataset.csv ## fine-tune the offline backbone on data/processed/NAME into models/NAME (TRAIN_ARGS='...')
	@$(MAKE) --no-print-directory -W $(PROCESSED)/dataset.csv $(MODEL)/metrics.json

compress: $(MODEL)/metrics.json ## export models/NAME to an int8 ONNX bundle with a parity/size/speed report
	@$(MAKE) --no-print-directory -W $(MODEL)/metrics.json $(BUNDLE)/bundle.json

serve: install ## development web site on the existing bundle
	$(PY) -m flask_app --bundle $(BUNDLE) --host $(HOST) --port $(PORT)

serve-prod: install ## production web site: gunicorn, 2 workers x 4 threads, 1 onnxruntime thread each
	MLTC_BUNDLE=$(BUNDLE) MLTC_THREADS=1 .venv/bin/gunicorn -w 2 --threads 4 -b $(HOST):$(PORT) 'flask_app:create_app()'

serve-registry: install ## web site on the registry's current model, swapped live on promote / rollback
	$(PY) -m flask_app --registry --host $(HOST) --port $(PORT)

retrain: install $(BUNDLE)/bundle.json ## learn from the corrections: export -> prepare -> train -> compress -> compare -> promote if not worse
	$(PY) -m deployment.registry promote $(BUNDLE) --initial
	$(PY) -m feedback export --out $(CORRECTIONS)
	$(PY) -m training.prepare --input $(DATA) --corrections $(CORRECTIONS) --out $(RETRAIN_DATA) --min-label-freq 0.01 \
	  --previous $$(test -f $(RETRAIN_DATA)/dataset.csv && echo $(RETRAIN_DATA) || echo $(PROCESSED))
	$(PY) -m training.train --data $(RETRAIN_DATA) --out $(RETRAINED) $(RETRAIN_ARGS)
	$(PY) -m compression.quantize --model $(RETRAINED) --out $(RETRAINED)/bundle $(COMPRESS_ARGS)
	$(PY) -m deployment.registry promote $(RETRAINED)/bundle --out $(RETRAINED)/comparison.json $(PROMOTE_ARGS) \
	  || { code=$$?; [ $$code -eq 3 ] && echo "retrain: not promoted (worse than the current model); see above"; [ $$code -eq 3 ]; }

models: install ## the model registry: versions (the current one marked) and the history
	$(PY) -m deployment.registry list
	$(PY) -m deployment.registry history

gradio: install ## Gradio app on the existing bundle (port 7860)
	$(PY) -m deployment.app --bundle $(BUNDLE) --port 7860

predict: install ## batch predictions: make predict IN=file.csv OUT=preds.csv
	$(PY) -m deployment.predict --bundle $(BUNDLE) --input $(IN) --out $(OUT)

# A cluster MASTER (spark://..., yarn, k8s://...) ships the executors' environment and the bundle with the job.
SPARK_CLUSTER = $(filter-out local%,$(MASTER))
predict-spark: install $(if $(SPARK_CLUSTER),$(SPARK_ENV)) ## batch predictions on Spark: make predict-spark IN=file|folder|glob OUT=folder [MASTER=local[*]|spark://host:7077]
	$(PY) -m deployment.spark_predict --bundle $(BUNDLE) --input '$(IN)' --out $(OUT) $(if $(MASTER),--master '$(MASTER)') \
	  $(if $(SPARK_CLUSTER),--ship-bundle --conf spark.archives=$(SPARK_ENV)#env --conf spark.pyspark.python=./env/bin/python)

spark-env: $(SPARK_ENV) ## the Spark executors' Python (no torch) for a cluster: build/spark-env.tar.gz, size printed

$(SPARK_ENV): deployment/*.py deployment/requirements-spark.txt constraints.txt scripts/build_spark_env.sh
	bash scripts/build_spark_env.sh $@

scrape-urls: install ## listing pages -> data/raw/SITE_urls.csv (SITE=smashwords|stackoverflow START=url)
	$(PY) -m scraper.url_scraper --site $(SITE) --start-url $(START) --out data/raw/$(SITE)_urls.csv

scrape-details: install ## detail pages -> data/raw/SITE_details.csv
	$(PY) -m scraper.details_scraper --site $(SITE) --urls data/raw/$(SITE)_urls.csv --out data/raw/$(SITE)_details.csv

notebooks: install $(BUNDLE)/bundle.json ## execute both notebooks on the sample data with small settings
	$(PY) notebooks/run.py notebooks/multilabel_text_classification.ipynb -p QUICK=True -p OUT_DIR=\"test-artifacts/notebook\"
	$(PY) notebooks/run.py notebooks/onnx_inference.ipynb -p BUNDLE=\"$(BUNDLE)\"

test: install system-deps ## install everything and run the whole suite (what CI runs)
	$(PY) -m pytest

test-fast: install ## the quick suite for iteration (no slow tests)
	$(PY) -m pytest -m "not slow" -x -q

test-slow: install ## only the slow tests (real training)
	$(PY) -m pytest -m slow

bench: ## list the benchmarks (run one with make bench-NAME; what they measured: docs/RESULTS.md)
	@grep -hE '^bench-[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'
	@echo "  run one: make bench-NAME (NAME=$(NAME) picks the model they read); results: docs/RESULTS.md"

bench-accuracy: install ## ours vs TF-IDF baseline on ../shared data (long)
	$(PY) -m bench.accuracy

bench-train-speed: install ## a training step part by part, blurr's per-batch tokenising vs the token cache
	$(PY) -m bench.train_speed

bench-scrape: install ## scraper pages/s vs a naive loop against a local server
	$(PY) -m bench.scrape

bench-prepare: install ## training.prepare on ../shared data and the stratified split on 30,000 rows (seconds)
	$(PY) -m bench.prepare

bench-serve: install ## gunicorn throughput and latency vs in-process predictions
	$(PY) -m bench.serve --bundle $(BUNDLE)

bench-spark: install ## the batch CLI vs Spark local[1] / local[2] on the same 20,000 real texts
	$(PY) -m bench.spark $(if $(wildcard $(BUNDLE)/bundle.json),--bundle $(BUNDLE))

bench-windows: install ## documents/s by text length and cap on windows (whole documents vs the first window)
	$(PY) -m bench.windows --bundle $(BUNDLE)

bench-memory: install ## one serving process's peak RSS and speed by tokens per onnxruntime call and memory-pattern planning
	$(PY) -m bench.memory --bundle $(BUNDLE)

bench-explain: install ## evidence spans: deleting them vs deleting random words (ERASER comprehensiveness), added latency
	$(PY) -m bench.explain --bundle $(BUNDLE)

bench-combine: install ## how the model's two parts are combined and decoded: every rule re-scored on its valid/test outputs
	$(PY) -m bench.combine --model $(MODEL)

bench-feedback: install ## corrections/s and p99 at 8 clients, SQLite vs PostgreSQL; predict p99 with the store on vs off
	$(PY) -m bench.feedback $(if $(wildcard $(BUNDLE)/bundle.json),--bundle $(BUNDLE))

bench-consistency: install ## one text, one answer: label sets alone vs in one call, served (one window per call) vs padded batches
	$(PY) -m bench.consistency --bundle $(BUNDLE)

clean: ## remove derived data and models (keeps .venv, data/sample, the corrections database and the registry's copies it points to)
	rm -rf data/processed test-artifacts bench/results
	[ ! -d models ] || find models -mindepth 1 -maxdepth 1 ! -name registry -exec rm -rf {} +
