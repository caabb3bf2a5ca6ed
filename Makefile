# How to ImageNet: ILSVRC2012 from a torrent to training-ready MDS shards for PyTorch.
#
# The map of the pipeline: one target per stage and split, its prerequisite the stage before, its
# recipe one call of the stage (python -m how_to_imagenet.pipeline <stage>). Each stage writes its
# stamp DATA/.stamps/<split>.<stage> last, recording its inputs (the config values it used and the
# stamp of the stage before) and its outputs; the stage itself decides, by that one rule
# (how_to_imagenet/pipeline/stamps.py), whether it is already done, in a fraction of a second.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules
.SUFFIXES:

## Variables (override on the command line, e.g. make val DATA=/mnt/imagenet; - is empty):
CONFIG ?= config.yaml## config file: sources, checksums, expected sizes and counts, MDS settings
DATA ?=## data folder (default: the config's data_dir, ./data)
YES ?= 0## YES=1: do not ask before a large download (asked only at a terminal)
VENV ?= .venv## the virtual environment that make builds from requirements.txt and requirements-dev.txt
TORCH ?=## torch pins installed first, e.g. TORCH="torch==2.14.1 torchvision==0.29.1" (empty: pip picks)
WORKERS ?=## processes for mds and untar (default: a few readers for full-size mds, bound by the disk; one per core for RESIZE and untar)
MDS_FROM ?= tar## read images for mds from the verified archive (tar) or the unpacked folders (untar)
HASHES ?=## archive hashes verify checks, e.g. HASHES="md5 sha256 xxh64" (default: the config's verify.hashes, sha256 and xxh64)
RESIZE ?=## short side in pixels: mds/check/samples work on the variant ILSVRC2012_img_SPLIT_r<RESIZE>/
QUALITY ?= 90## JPEG quality of the RESIZE variant
REMOTE ?=## object-store folder, e.g. s3://bucket/imagenet/mds: mds uploads shards as written, check reads it
DECODE ?= 0## DECODE=1: make check also decodes every image and checks it is RGB
BENCH_IMAGES ?= 13600## images in the make bench fixture (about 110 KB each: 13600 is about 1.5 GB)
BENCH_REPEAT ?= 2## runs of each make bench row; the fastest counts (the machine may be shared)
DEMO ?= demo## folder for make demo (emptied first if an earlier demo made it; any other is refused)
PEER_ROUNDS ?= 3## rounds of make bench-peers' loader rows, taken in turn; each row's best and median count
PEERS_VENV ?= .venv-peers## the environment make bench-peers builds: requirements-peers.txt over the venv's packages
PYTEST_ARGS ?=## extra pytest arguments for make test, e.g. PYTEST_ARGS="-k val -x"
TEST_JOBS ?= 3## pytest processes for make test (pytest-xdist); a third keeps 2 cores busy while tests wait on aria2c
V ?= 0## V=1: print each recipe's full command (default: one short line each, such as 'mds val')

PY := $(VENV)/bin/python
CROPS := src/how_to_imagenet/_crops
export PYTHONPATH := $(CURDIR)/src
# The one command (how-to-imagenet); HOW_TO_IMAGENET_VIA=make: its hints name make targets and variables.
STAGE := HOW_TO_IMAGENET_VIA=make $(PY) -m how_to_imagenet
# A value as one shell word, whatever quotes it holds.
quote = '$(subst ','\'',$(1))'
WHERE = --config $(call quote,$(CONFIG)) $(if $(DATA),--data $(call quote,$(DATA)))
# Every stage gets the variables it may use, and checks all of them before any work.
ARGS = $(WHERE) $(foreach v,WORKERS RESIZE QUALITY DECODE YES MDS_FROM HASHES,--var $(call quote,$(v)=$($(v))))
VARIANT_ARGS = $(if $(RESIZE),--resize='$(RESIZE)') $(if $(REMOTE),--remote='$(REMOTE)')
MDS_ARGS = --from='$(MDS_FROM)' $(if $(WORKERS),--workers='$(WORKERS)') --quality='$(QUALITY)' $(VARIANT_ARGS)
# When the goal is SPLIT's shards (make SPLIT, all, mds-SPLIT), verify goes on to mds in the same read.
THEN_MDS = $(if $(filter mds-$(1) $(1),$(MAKECMDGOALS)),--then-mds $(MDS_ARGS))
SPLIT_TARGETS = $(STAGE) splits $(ARGS) --prefix
# Every split a config may hold (how_to_imagenet.names: SPLITS, then EVAL_SPLITS): each gets every stage's target.
EVALS := imagenet-v2-matched-frequency imagenet-v2-threshold0.7 imagenet-v2-top-images imagenet-a imagenet-r \
	imagenet-sketch
SPLITS := train val $(EVALS)
# What a recipe prints (as the Linux kernel's makefiles): its short name, or with V=1 the full command;
# a recipe's further lines are prefixed $(Q), shown with V=1 only.
say = $(if $(filter 1,$(V)),,@echo $(call quote,$(1));)
Q = $(if $(filter 1,$(V)),,@)

.PHONY: help all train val evals folders status bench bench-loader bench-peers check demo test lint venv aria2c \
	$(foreach s,$(SPLITS),download-$(s) verify-$(s) untar-$(s) mds-$(s) check-$(s) samples-$(s) clean-$(s) clean-$(s)-tar)

# A target's '## @NAME' is command NAME's one line, as how-to-imagenet --help gives it: from SUMMARIES, which
# imports nothing, read by the system's python3 without site-packages (make help needs no venv).
SUMMARIES := src/how_to_imagenet/pipeline/summaries.py
help: ## list targets and variables
	@echo "How to ImageNet: make <target> [VAR=value ...]"
	@echo
	@echo "Targets (SPLIT is train, val or a test set: $(EVALS)):"
	@sed -nE 's/^\$$\(SPLITS:%=(.*)\): .*## (.*)/\1|\2/p; s/^([a-zA-Z0-9%-]+( [a-zA-Z0-9%-]+)*):.*## (.*)/\1|\3/p' $(MAKEFILE_LIST) \
	  | sed 's/%/SPLIT/g' | awk -F'|' 'FILENAME != "-" {line["@" $$1] = $$2; next} \
	    {printf "  %-30s %s\n", $$1, ($$2 in line ? line[$$2] : $$2)}' <(python3 -I -S $(SUMMARIES)) -
	@echo
	@sed -nE 's/^## (.*)/\1/p; s/^([A-Z_]+) \?= ?(.*)## (.*)/\1|\2|\3/p' $(MAKEFILE_LIST) \
	  | awk -F'|' 'NF < 3 {print; print "  VARIABLE     DEFAULT      MEANING"; next} {printf "  %-12s %-12s %s\n", $$1, ($$2 == "" ? "-" : $$2), $$3}'

all: | venv ## @all
	@goals="$$($(SPLIT_TARGETS) mds-)" && $(MAKE) --no-print-directory $$goals
evals: | venv ## @evals
	@goals="$$($(SPLIT_TARGETS) mds- --evals)" && $(MAKE) --no-print-directory $$goals
train: mds-train ## @train
val: mds-val ## @val
folders: | venv ## train and val (those in the config) as ImageFolder trees (not needed for MDS)
	@goals="$$($(SPLIT_TARGETS) untar-)" && $(MAKE) --no-print-directory $$goals

$(SPLITS:%=download-%): download-%: | venv aria2c ## @download
	$(call say,download $*)$(STAGE) download $(ARGS) $(if $(filter 1,$(YES)),--yes) $(if $(filter $@,$(MAKECMDGOALS)),--fetch) $*
$(SPLITS:%=verify-%): verify-%: download-% ## @verify
	$(call say,verify $*)$(STAGE) verify $(ARGS) $(if $(HASHES),--hashes=$(call quote,$(HASHES))) $(call THEN_MDS,$*) $*
$(SPLITS:%=untar-%): untar-%: verify-% ## @untar
	$(call say,untar $*)$(STAGE) untar $(ARGS) $(if $(WORKERS),--workers='$(WORKERS)') $*
$(SPLITS:%=mds-%): mds-%: $(if $(filter untar,$(MDS_FROM)),untar,verify)-% ## @mds
	$(call say,mds $*)$(STAGE) mds $(ARGS) $(MDS_ARGS) $*

check: | venv ## check every split in the config (below), in one run
	$(call say,check)$(STAGE) check $(ARGS) $(if $(filter 1,$(DECODE)),--decode) $(VARIANT_ARGS)
$(SPLITS:%=check-%): check-%: | venv ## @check
	$(call say,check $*)$(STAGE) check $(ARGS) $(if $(filter 1,$(DECODE)),--decode) $(VARIANT_ARGS) $*
$(SPLITS:%=samples-%): samples-%: | venv ## @samples
	$(call say,samples $*)$(STAGE) samples $(ARGS) $(if $(RESIZE),--resize='$(RESIZE)') $*
status: | venv ## @status
	@$(STAGE) status $(ARGS)
$(SPLITS:%=clean-%): clean-%: | venv ## @clean
	$(call say,clean $*)$(STAGE) clean $(ARGS) $*
$(SPLITS:%=clean-%-tar): clean-%-tar: | venv ## as clean-SPLIT, and remove the downloaded tar too
	$(call say,clean $* --tar)$(STAGE) clean $(ARGS) --tar $*

demo: | venv aria2c ## build the fixture, serve it on 127.0.0.1, run the whole pipeline on it (under a minute)
	$(call say,demo $(DEMO))IMAGENET_LOOPBACK_ONLY=1 $(PY) tools/demo.py --dir $(call quote,$(DEMO))
bench: | venv ## time every stage against the copy floor (cp); table in DATA/reports/bench.json and bench.png
	$(call say,bench)$(PY) tools/bench.py $(WHERE) --images $(BENCH_IMAGES) $(if $(WORKERS),--workers $(WORKERS)) --repeat $(BENCH_REPEAT)
bench-peers: $(PEERS_VENV)/.installed | venv ## the loaders and writer against FFCV, DALI (CPU), LitData, WebDataset, streaming on the same JPEGs; DATA/reports/bench-peers.json
	$(call say,bench-peers)$(PEERS_VENV)/bin/python tools/bench_peers.py $(WHERE) --rounds $(PEER_ROUNDS)
$(PEERS_VENV)/.installed: requirements-peers.txt $(VENV)/.installed
	@pkg-config --exists opencv4 libturbojpeg || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq libopencv-dev libturbojpeg0-dev pkg-config >/dev/null; } \
	  || { echo "error: FFCV's build needs OpenCV and libturbojpeg; install them with 'sudo apt-get install libopencv-dev libturbojpeg0-dev pkg-config'" >&2; exit 1; }
	$(call say,venv $(PEERS_VENV))python3 -m venv $(PEERS_VENV)
	$(Q)$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$$($(PEERS_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_project_venv.pth"
	$(Q)$(PEERS_VENV)/bin/pip install -q setuptools wheel && $(PEERS_VENV)/bin/pip install -q --no-build-isolation -r requirements-peers.txt && touch $@
bench-loader: | venv ## this project's loaders alone, ImageNetLoader with 1 and 2 threads beside its bare decoder; DATA/reports/bench-loader.json
	$(call say,bench-loader)$(PY) tools/bench_peers.py $(WHERE) --no-writers --rounds $(PEER_ROUNDS) --report bench-loader --loaders loader-1,loader,loader-readers,loader-float,loader-bare,mds-fast,mds-pil,mds-gpu
# The tests start the stages hundreds of times: from bytecode, also where PYTHONDONTWRITEBYTECODE is set.
test: | venv aria2c ## run the test suite (pytest): unit tests in-process, then end-to-end make runs
	$(call say,test)$(PY) -m compileall -q src
	$(Q)IMAGENET_LOOPBACK_ONLY=1 $(PY) -m pytest -n $(TEST_JOBS) --dist loadgroup $(PYTEST_ARGS)
lint: | venv ## ruff check
	$(call say,lint)$(VENV)/bin/ruff check src tools tests

venv: $(VENV)/.installed $(CROPS).built ## build the virtual environment (torch from TORCH, then requirements.txt and -dev) and the loader's C extension
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(call say,venv $(VENV))python3 -m venv $(VENV) && $(VENV)/bin/pip install -q $(TORCH) -r requirements.txt -r requirements-dev.txt && touch $@
# The loader's threaded JPEG crop decoder (setup.py), built in place against the system's libjpeg-turbo.
$(CROPS).built: $(CROPS).c setup.py $(VENV)/.installed
	@out="$$($(PY) setup.py -q build_ext --inplace 2>&1)"; $(PY) -c 'import how_to_imagenet._crops' 2>/dev/null \
	  || { echo "$$out" >&2; echo "error: the loader's C extension did not build: it needs gcc and libjpeg-turbo's headers ('sudo apt-get install gcc libjpeg62-turbo-dev'), then 'make venv'" >&2; exit 1; }
	@touch $@

aria2c: ## install aria2c with apt-get if it is missing (as root), else say how
	@command -v aria2c >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq aria2 >/dev/null; } \
	  || { echo "error: aria2c is missing; install it with 'sudo apt-get install aria2'" >&2; exit 1; }
