# How to ImageNet: ILSVRC2012 from a torrent to training-ready MDS shards for PyTorch.
#
# Each stage is a stamp file $(DATA)/.stamps/<split>.<stage>, written last by its script and holding
# what the stage produced. Its prerequisites are the stamp of the stage before and the config, so Make
# runs a stage again when an input is newer; the script then compares the inputs recorded in its stamp
# and redoes the work only when they really changed (else it just touches the stamp).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules
.SUFFIXES:

## Variables (override on the command line, e.g. make val DATA=/mnt/imagenet):
CONFIG ?= config.yaml## config file: sources, checksums, expected sizes and counts, MDS settings
DATA ?= $(CONFIG_DATA)## data folder (default: the config's data_dir, ./data)
YES ?= 0## YES=1: do not ask before a large download (asked only at a terminal)
VENV ?= .venv## the virtual environment that make builds from requirements*.txt
TORCH ?=## torch pins installed first, e.g. TORCH="torch==2.14.1 torchvision==0.29.1" (empty: pip picks)
WORKERS ?= $(shell nproc)## processes for mds and untar (default: the number of cores)
MDS_FROM ?= tar## read images for mds from the verified archive (tar) or the unpacked folders (untar)
RESIZE ?=## short side in pixels: mds/check/samples work on the variant ILSVRC2012_img_SPLIT_r<RESIZE>/
QUALITY ?= 90## JPEG quality of the RESIZE variant
REMOTE ?=## object-store folder, e.g. s3://bucket/imagenet/mds: mds uploads shards as written, check reads it
DECODE ?= 0## DECODE=1: make check also decodes every image and checks it is RGB
BENCH_IMAGES ?= 13600## images in the make bench fixture (about 110 KB each: 13600 is about 1.5 GB)
BENCH_REPEAT ?= 2## runs of each make bench row; the fastest counts (the machine may be shared)
DEMO ?= demo## folder for make demo (emptied first)
PYTEST_ARGS ?=## extra pytest arguments for make test, e.g. PYTEST_ARGS="-k val -x"

PY := $(VENV)/bin/python
# mds writes the full-size dataset (stage mds) or, with RESIZE, a low-resolution one (mds_r<RESIZE>).
MDS_STAGE = mds$(if $(RESIZE),_r$(RESIZE))
VARIANT_ARGS = $(if $(RESIZE),--resize $(RESIZE) --quality $(QUALITY)) $(if $(REMOTE),--remote $(REMOTE))
MDS_OPTIONS = --from $(MDS_FROM) --workers $(WORKERS) $(VARIANT_ARGS)
MDS_VARS = $(STAMPS)/.$(MDS_STAGE).options
STAMPS = $(DATA)/.stamps
ARGS = --config $(CONFIG) --data $(DATA)
# Make's stage targets are paths under DATA, which may come from the config: the config script
# validates the config and writes what Make needs of it; Make includes that file, remaking it
# first whenever the config changed. Only goals that touch the data need it.
CONFIG_MK := .make/$(subst /,_,$(abspath $(CONFIG))).mk
CONFIG_GOALS := all train val folders status bench check check-% download-% verify-% untar-% mds-% samples-% clean-%
ifneq ($(filter $(CONFIG_GOALS),$(MAKECMDGOALS)),)
include $(CONFIG_MK)
ifneq ($(wildcard $(CONFIG_MK)),)
ifneq ($(words $(DATA)),1)
$(error DATA must be one folder path without spaces, got '$(DATA)')
endif
endif
endif

.PHONY: help all train val folders status bench check check-train check-val demo test lint venv aria2c \
	download-train download-val verify-train verify-val untar-train untar-val mds-train mds-val \
	samples-train samples-val clean-train clean-val clean-train-tar clean-val-tar

help: ## list targets and variables
	@echo "How to ImageNet: make <target> [VAR=value ...]"
	@echo
	@echo "Targets (SPLIT is train or val):"
	@sed -nE 's/^([a-zA-Z0-9%-]+( [a-zA-Z0-9%-]+)*):.*## (.*)/\1|\3/p' $(MAKEFILE_LIST) | awk -F'|' '{printf "  %-30s %s\n", $$1, $$2}'
	@echo
	@sed -nE 's/^## (.*)/\1/p; s/^([A-Z_]+) \?= ?(.*)## (.*)/\1|\3/p' $(MAKEFILE_LIST) | awk -F'|' 'NF < 2 {print; next} {printf "  %-12s %s\n", $$1, $$2}'

all: $(CONFIG_SPLITS) ## every split in the config (train and val): download, verify, MDS shards
train: mds-train ## train split: download, verify, MDS shards (shuffled with mds.shuffle_seed)
val: mds-val ## val split: download, verify, MDS shards (ImageFolder order)
folders: $(addprefix untar-,$(CONFIG_SPLITS)) ## every split as an ImageFolder tree (not needed for MDS)

download-train download-val: download-%: $(STAMPS)/%.download ## aria2c fetches the archive into DATA/tar/ (resumable)
verify-train verify-val: verify-%: $(STAMPS)/%.verify ## check size and hashes, and index the images, in one read
untar-train untar-val: untar-%: $(STAMPS)/%.untar ## unpack into an ImageFolder tree DATA/untar/ILSVRC2012_img_SPLIT/
mds-train mds-val: mds-%: $(STAMPS)/%.$(MDS_STAGE) ## write MDS shards to DATA/mds/ILSVRC2012_img_SPLIT/ from the archive
check: $(addprefix check-,$(CONFIG_SPLITS)) ## check every split (below)
check-train check-val: check-%: | venv ## read SPLIT back with StreamingDataset: hashes, counts, labels, order, bytes
	$(PY) scripts/check.py $(ARGS) $(if $(filter 1,$(DECODE)),--decode) $(VARIANT_ARGS) $*

samples-train samples-val: samples-%: | venv ## print a few samples read back with StreamingDataset
	$(PY) scripts/samples.py $(ARGS) $(if $(RESIZE),--resize $(RESIZE)) $*

$(STAMPS)/%.download: $(CONFIG) | venv aria2c
	$(PY) scripts/download.py $(ARGS) $(if $(filter 1,$(YES)),--yes) $*

$(STAMPS)/%.verify: $(STAMPS)/%.download $(wildcard $(addprefix $(CONFIG_CHECKSUMS)/,MD5SUMS SHA256SUMS XXH64SUMS))
	$(PY) scripts/verify.py $(ARGS) $*

$(STAMPS)/%.untar: $(STAMPS)/%.verify
	$(PY) scripts/untar.py $(ARGS) --workers $(WORKERS) $*

$(STAMPS)/%.$(MDS_STAGE): $(STAMPS)/%.$(if $(filter untar,$(MDS_FROM)),untar,verify) $(CONFIG) $(MDS_VARS)
	$(PY) scripts/mds.py $(ARGS) $(MDS_OPTIONS) $*

# The variables that change what mds writes, in a file rewritten only when they change, so that
# Make reruns mds for `make val WORKERS=4` or REMOTE=... as it does for a changed config.
$(MDS_VARS): FORCE
	@mkdir -p $(@D) && { echo '$(MDS_OPTIONS)' | cmp -s - $@ || echo '$(MDS_OPTIONS)' > $@; }

.PHONY: FORCE
FORCE:

status: | venv ## table of every split and stage (done / partial / missing) and the next command
	@$(PY) scripts/status.py $(ARGS)

clean-train clean-val: clean-%: | venv ## remove SPLIT's untar, MDS and their stamps (keeps the tar)
	$(PY) scripts/clean.py $(ARGS) $*

clean-train-tar clean-val-tar: clean-%-tar: | venv ## as clean-SPLIT, and remove the downloaded tar too
	$(PY) scripts/clean.py $(ARGS) --tar $*

$(CONFIG_MK): $(CONFIG) | venv
	@mkdir -p $(@D)
	$(PY) scripts/config.py $(CONFIG) > $@

demo: | venv aria2c ## build the fixture, serve it on 127.0.0.1, run the whole pipeline on it (under a minute)
	IMAGENET_LOOPBACK_ONLY=1 $(PY) scripts/demo.py --dir $(DEMO)

bench: | venv ## time every stage against the copy floor (cp); table in DATA/reports/bench.json and bench.png
	$(PY) scripts/bench.py --data $(DATA) --images $(BENCH_IMAGES) --workers $(WORKERS) --repeat $(BENCH_REPEAT)

test: | venv aria2c ## run the test suite (pytest) on fixtures built in temporary folders
	IMAGENET_LOOPBACK_ONLY=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: | venv ## ruff check
	$(VENV)/bin/ruff check scripts tests

venv: $(VENV)/.installed ## build the virtual environment (torch from TORCH, then requirements*.txt)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q $(TORCH) -r requirements.txt -r requirements-dev.txt && touch $@

aria2c: ## install aria2c with apt-get if it is missing (as root), else say how
	@command -v aria2c >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq aria2 >/dev/null; } \
	  || { echo "error: aria2c is missing; install it with 'sudo apt-get install aria2'" >&2; exit 1; }
