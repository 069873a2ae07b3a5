# `make test` and `make run` set up .venv on first use (Python 3.11, requirements pinned).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup system-deps test run demo shapes-model shapes-seeds shapes-scst coco-reproduce bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Java runs the official COCO tokenizer and METEOR; Chromium + chromedriver drive the demo's
# browser test. Installed with apt when missing (as root, or through sudo); where that is not
# possible the tests that need them are skipped, each saying why.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@if command -v java >/dev/null && command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  echo "installing with apt-get: default-jre-headless (COCO tokenizer, METEOR), chromium and chromium-driver (the demo's browser test)"; \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	     --no-install-recommends default-jre-headless chromium chromium-driver >/dev/null) || \
	  echo "warning: could not install Java/Chromium; their tests will be skipped"; \
	else echo "warning: no apt-get: install Java and Chromium + chromedriver by hand, or their tests are skipped"; fi

test: setup system-deps
	$(PY) -m pytest -q

# The main job: the web demo on the bundled model, at http://127.0.0.1:7860
run: setup
	$(VENV)/bin/captioner demo

demo: run

bench: setup
	$(PY) bench/caption_throughput.py
	$(PY) bench/train_throughput.py
	$(PY) bench/cpu_latency.py
	$(PY) bench/eval_speed.py
	$(PY) bench/demo_latency.py

# Rebuild the bundled model from nothing: generate the shapes world, cache its features, train
# configs/shapes.yaml (cross-entropy), then configs/shapes_scst.yaml from its best checkpoint
# (self-critical), score once on a test world drawn with a seed used for nothing else, and export
# it with those figures and how its data was made. Every stage is timed (runs/shapes/recipe_time.json);
# the seeds in both configs were chosen on validation (`make shapes-scst`).
shapes-model: setup
	$(PY) experiments/shapes_recipe.py --export captioner/assets/shapes.pt

# The cross-entropy stage's seed spread as it was first chosen (the paper's attention query): 3 training
# seeds, chosen on validation, scored once on the test world (experiments/results/shapes_seeds.json;
# docs/experiments.md).
shapes-seeds: setup
	$(PY) experiments/shapes_seeds.py --data data/shapes10k --num-images 10000 \
		--set model.attention_query=hidden train.epochs=12 --test-seed 2026

# The recipe: both stages over 3 seeds on the 20,000-image world, chosen on validation, scored once on a
# test world of seed 2030 (experiments/results/shapes_scst_world20k.json; docs/experiments.md). Earlier
# recipes ran on the 10,000-image world with 12 + 8 epochs, each scored on its own test world
# (docs/experiments.md gives their commands).
shapes-scst: setup
	$(PY) experiments/shapes_scst.py --data data/shapes20k --num-images 20000 --ce-runs runs/w20k/ce \
		--scst-runs runs/w20k/scst --test-seed 2030 --output experiments/results/shapes_scst_world20k.json

# From nothing to a scored COCO model with a report; re-running skips or resumes finished stages.
COCO ?= data/coco
coco-reproduce: setup
	$(VENV)/bin/captioner coco reproduce --root $(COCO) --config configs/coco_resnet101.yaml

clean:
	rm -rf $(VENV) runs .pytest_cache
