# CRUCIBLE-bench: the two set-up commands of the README.
#   make reproduce   create .venv, install the pinned dependencies, run the default DAG (tiny profile)
#   make test        same venv; ruff, snakemake --lint, pytest (includes the end-to-end smoke DAG)
#   make report      the Snakemake report (report.html) of the results present; PROFILE=smoke for the smoke
#                    profile (report-smoke.html). Run the DAG first; benchmarks/<profile>/ holds each job's timings
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
# one thread pool per process on this 2-core default; snakemake gives each job its own threads
export OMP_NUM_THREADS ?= 2

.PHONY: reproduce test lint install paper report clean-results scale-check

install: $(STAMP)

# the exact pins of constraints.txt (what the README's numbers were measured with) within pyproject's ranges
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), f"Python 3.11 or 3.12 is required, found {sys.version}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

reproduce: $(STAMP)
	snakemake --cores all

# the scale-check profile (config/scale.yaml: paper shapes, tiny counts) at two train-split sizes (render shards of
# 100 scenes: the shard count is not what this measures), each in its own working folder, then the peak memory per
# rule side by side (results/scale_check/memory.md): README "Scaling out"
SCALE_TRAIN := 12 400
SCALE_TARGET := results/scale/scvar/ecfm_k2/seed0/samples.safetensors
scale-check: $(STAMP)
	for n in $(SCALE_TRAIN); do \
	  d=results/scale_check/train$$n; mkdir -p $$d; \
	  for f in Snakefile workflow config; do ln -sfn $(CURDIR)/$$f $$d/$$f; done; \
	  (cd $$d && snakemake $(SCALE_TARGET) --cores all --set-threads render_shard=1 --configfile config/scale.yaml \
	    --config "data={scenes: {train: $$n}, shard_scenes: 100}") || exit 1; \
	done
	crucible paper memory --runs $(foreach n,$(SCALE_TRAIN),results/scale_check/train$(n)) --out results/scale_check/memory

lint: $(STAMP)
	ruff check src tests
	snakemake --lint --configfile config/smoke.yaml

test: lint
	pytest

# the paper's tables and figures (workflow/rules/paper.smk, default profile), then paper/build/main.pdf
PAPER_RULES := paper_tables paper_figure_hotplug paper_figure_ecfm paper_figure_curves paper_figure_qualitative \
	dataset_figure
paper: $(STAMP)
	@command -v latexmk >/dev/null 2>&1 || { \
	  echo "make paper: latexmk is not installed, so the PDF cannot be built."; \
	  echo "  Debian/Ubuntu: sudo apt-get install latexmk texlive-latex-recommended texlive-fonts-recommended lmodern"; \
	  echo "  macOS: install MacTeX (https://tug.org/mactex/), which includes latexmk"; \
	  echo "  The tables and figures alone need no TeX: snakemake --cores all $(PAPER_RULES)"; \
	  exit 1; }
	snakemake --cores all $(PAPER_RULES)
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error -outdir=build main.tex
	@echo "wrote paper/build/main.pdf"

# the report of one profile's results: every figure and table declared with report(...) in workflow/rules/, the
# front page workflow/report/workflow.rst, Snakemake's run statistics
PROFILE ?= tiny
REPORT ?= $(if $(filter tiny,$(PROFILE)),report.html,report-$(PROFILE).html)
report: $(STAMP)
	snakemake --cores all $(if $(filter tiny,$(PROFILE)),,--configfile config/$(PROFILE).yaml) --report $(REPORT)
	@echo "wrote $(REPORT)"

clean-results:
	rm -rf results logs benchmarks .snakemake/incomplete
