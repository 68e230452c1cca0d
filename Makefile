# nnpar-lite: two commands do all the set-up.
#   make lab    create .venv if missing, then open JupyterLab on the workbook
#   make test   create .venv if missing, then run the unit tests and every notebook under nbval
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg
LAB_ARGS ?=
# The notebook JupyterLab opens on: make lab START=notebooks/zh/00_start_here.ipynb for the Chinese edition.
START ?= notebooks/00_start_here.ipynb
# Jupyter refuses to run as root (containers, Binder-like images) unless told.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab test unit notebooks notebooks-profiles browser-test html store-notebooks sync-zh env clean

env: $(STAMP)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "nnpar-lite needs Python 3.10 or newer; set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)

# Reinstalled whenever the dependencies or their pins change. The workbook's JupyterLab
# settings (no news pop-up over the notebook a class is looking at) go into the environment.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
$(STAMP): $(PY) pyproject.toml constraints.txt jupyterlab-overrides.json
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	mkdir -p $(dir $(LAB_SETTINGS)) && cp jupyterlab-overrides.json $(LAB_SETTINGS)
	@touch $@

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 $(ROOT_FLAG) $(LAB_ARGS) $(START)

test: unit notebooks notebooks-profiles browser-test

# Two at a time (pytest-xdist): much of a test's time is processes starting and waiting.
unit: $(STAMP)
	$(PY) -m pytest -n 2 tests

# Both editions (notebooks/ and notebooks/zh/), two notebooks at a time (pytest-xdist; each
# notebook keeps its own kernel). The font cache is built once before the notebooks run, so
# the first figure does not pay for it; MPLBACKEND is unset so %matplotlib inline takes effect.
notebooks: $(STAMP)
	$(PY) -c 'import matplotlib.pyplot'
	env -u MPLBACKEND $(PY) -m pytest -p no:cacheprovider -n 2 --dist loadfile $(NBVAL) notebooks

# The stored outputs must hold on any learner's machine: the English chapters run again under
# two other machine profiles. (a) one core, one thread, torch's scalar kernels: each chapter
# pinned to one CPU, two chapters at a time on two CPUs (scripts/one_core_profile.py); (b) torch's
# AVX2 kernels (on a CPU without AVX2 torch falls back to what it has).
notebooks-profiles: $(STAMP)
	$(PY) scripts/one_core_profile.py notebooks/[0-9]*.ipynb -- $(NBVAL)
	env -u MPLBACKEND ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -p no:cacheprovider -n 2 --dist loadfile \
		$(NBVAL) notebooks/[0-9]*.ipynb

# Re-execute every chapter of both editions top to bottom in a fresh kernel and store its
# outputs (do this before committing a notebook): the English chapters first, then their code
# is copied into the Chinese twins, then those run. Cells tagged raises-exception may fail.
# Stored tracebacks then show paths relative to the repository, not this machine's.
store-notebooks: $(STAMP)
	$(PY) -c 'import matplotlib.pyplot'
	env -u MPLBACKEND $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=300 notebooks/[0-9]*.ipynb
	$(PY) scripts/editions.py sync
	env -u MPLBACKEND $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=300 notebooks/zh/[0-9]*.ipynb
	$(PY) scripts/relative_paths.py notebooks/[0-9]*.ipynb notebooks/zh/[0-9]*.ipynb

# Copy the English code cells into the Chinese chapters (then store them again).
sync-zh: $(STAMP)
	$(PY) scripts/editions.py sync

# JupyterLab in headless Chromium: every chapter run, its widget moved, a screenshot taken
# (build/screenshots). Needs Debian's chromium; CI installs it and sets NNPAR_REQUIRE_BROWSER.
CHROMIUM ?= /usr/bin/chromium
browser-test: $(STAMP)
	@if [ -x "$(CHROMIUM)" ] || [ -n "$$NNPAR_REQUIRE_BROWSER" ]; then \
		NNPAR_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -p no:cacheprovider -m browser tests/browser; \
	else \
		echo "SKIPPED the browser suite: no Chromium at $(CHROMIUM) (apt-get install chromium, then make browser-test)"; \
	fi

# The executed chapters as static HTML pages, for reading without Jupyter: build/html/index.html.
html: $(STAMP)
	$(VENV)/bin/jupyter nbconvert --to html --output-dir build/html notebooks/[0-9]*.ipynb
	$(VENV)/bin/jupyter nbconvert --to html --output-dir build/html/zh notebooks/zh/[0-9]*.ipynb
	$(PY) scripts/html_index.py build/html

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
