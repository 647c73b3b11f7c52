# kface: the two commands are `make demo` and `make test`; both install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline by default: nothing is fetched from the Hub at run time (timm's pretrained=True would
# otherwise retry for ~46 s before failing).
OFFLINE := HF_HUB_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_DATASETS_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=3
DEMO_DIR ?= demo_output

.PHONY: install demo demo-clean test clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: these exact wheels are the ones CI tests (and lie on local disk here)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	# kface itself, editable: its finder maps only the kface package, so the repo root (with evaluate.py,
	# which would shadow the HF evaluate package) is not put on sys.path
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: install
	$(OFFLINE) $(VENV)/bin/pytest -q

demo: install
	$(OFFLINE) $(PY) -m kface.synthetic --output_dir $(DEMO_DIR)/raw --num_identities 10 --images_per_identity 300 --seed 0
	$(OFFLINE) $(PY) preprocess.py --input_dir $(DEMO_DIR)/raw --output_dir $(DEMO_DIR)/data --resolutions 32 64 --num_workers 2

demo-clean:
	rm -rf $(DEMO_DIR)

clean: demo-clean
	rm -rf $(VENV) .pytest_cache
