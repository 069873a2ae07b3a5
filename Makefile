# `make test` and `make run` set up .venv on first use (Python 3.11, requirements pinned).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test run shapes-model clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

test: setup
	$(PY) -m pytest -q

# The main job until the demo lands: caption the bundled examples with the bundled model.
run: setup
	$(VENV)/bin/captioner caption examples/*.jpg

# Reproduce the bundled model from nothing: generate the shapes world, train configs/shapes.yaml,
# score it on a fresh test set (a seed not used in training), export it with its figures.
SHAPES_RUN := runs/shapes
shapes-model: setup
	$(VENV)/bin/captioner shapes --out data/shapes --num-images 10000 --seed 0 --quiet
	$(PY) train.py --config configs/shapes.yaml --set output_dir=$(SHAPES_RUN)
	$(VENV)/bin/captioner shapes --out data/shapes_test --num-images 1000 --seed 1 --splits test=1 --quiet
	$(VENV)/bin/captioner evaluate --checkpoint $(SHAPES_RUN)/checkpoint_best.pt --data-root data/shapes_test \
		--split-file data/shapes_test/dataset_shapes.json --split test --output $(SHAPES_RUN)/test_scores.json
	$(VENV)/bin/captioner export $(SHAPES_RUN)/checkpoint_best.pt captioner/assets/shapes.pt \
		--scores $(SHAPES_RUN)/test_scores.json

clean:
	rm -rf $(VENV) runs .pytest_cache
