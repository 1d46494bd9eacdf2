# Set-up and entry points. `make pipeline` and `make test` each build the environment first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

# DVC runs stage commands with `python`: make it the environment's.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup browser pipeline compare ablation sweep test deps house constraints clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

pipeline: setup  ## set up, then run the whole pipeline on params.yaml's defaults
	$(BIN)/dvc repro

# The paper's Tab.1 as a resumable study (finished runs are never rerun; ARGS="--carry ..." brings in another
# machine's): PROFILE=pretrained is the paper's regime (docs/experiments.md); out: reports/<profile>/table/.
PROFILE ?= default
TABLE_BITS ?= 12 24 32 36 48
compare: setup  ## set up, then every method at 12/24/32/36/48 bits on CIFAR-10 in Tab.1's layout (PROFILE=...)
	$(BIN)/python flows/ablation.py --study table --profile $(PROFILE) --datasets cifar10 --seeds 0 \
	  --bits $(TABLE_BITS) --out reports/$(PROFILE) $(ARGS)

# ARGS passes more options to the study, e.g. ARGS="--carry bench/results/sweep_cpu/runs.csv".
ablation: setup  ## set up, then run DSAH's ablation (9 variants x 3 seeds x 12/48 bits x CIFAR-10 and the mosaic)
	$(BIN)/python flows/ablation.py $(ARGS)

sweep: setup  ## set up, then run one setting at a time around the defaults (CIFAR-10, 12/48 bits, seed 0)
	$(BIN)/python flows/ablation.py --study sweep --datasets cifar10 --seeds 0 $(ARGS)

# The report test opens the HTML report in Debian's chromium through chromedriver.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "make test needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver"; exit 1; fi; \
	fi

# Three pytest-xdist workers, each test file on one worker (module fixtures are built once): much of the
# suite waits on subprocesses, servers, leases and DVC, so on two cores a third worker runs while one waits.
TEST_WORKERS ?= 3
test: setup browser  ## set up, then run the test suite
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# dvc.yaml's module deps are each stage script's imports in src/dsah: rewrite them after changing imports
# (tests/test_dvc_deps.py fails while they are stale).
deps: setup  ## rewrite dvc.yaml's module deps from the stage scripts' imports
	$(BIN)/python tools/dvc_deps.py

# The picture of the code's rooms and imports in docs/pipeline.md (tests/test_house.py fails while it is stale).
house: setup  ## redraw docs/pipeline.md's picture of the house from the imports
	$(BIN)/python tools/house.py

constraints: setup  ## re-pin every installed package after a deliberate upgrade
	{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^dsah'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean-venv:
	rm -rf $(VENV)
