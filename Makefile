# repflow — see README.md. Every target works on a fresh machine after `make setup`.
PYTHON ?= python3
CARGO  ?= cargo

.PHONY: setup build run example-data test fixtures bench bench-quick lint doc clean

## Python packages of the reference implementation (fixtures, benchmark).
setup:
	$(PYTHON) -m pip install --quiet -r scripts/requirements.txt

build:
	$(CARGO) build --release

## The main job: the default pipeline on the example activations (incremental: a second
## `make run` reuses everything from the store in .repflow/).
run: setup build example-data
	./target/release/repflow run pipelines/example.toml

## Activations behind pipelines/example*.toml.
example-data: data/example/narrow_seed0/stimuli.txt

data/example/narrow_seed0/stimuli.txt: scripts/example_data.py
	$(PYTHON) scripts/example_data.py data/example

## All tests (unit, reference fixtures, invariances, command line), optimised build.
test:
	$(CARGO) test --workspace --release

## Regenerate tests/fixtures from the Python reference (numpy, scipy, scikit-learn, POT).
fixtures:
	$(PYTHON) scripts/make_fixtures.py

## repflow vs the Python reference on the same matrices, in the same run.
bench: setup
	$(CARGO) build --release --benches --bins
	$(PYTHON) scripts/bench.py

bench-quick: setup
	$(CARGO) build --release --benches --bins
	$(PYTHON) scripts/bench.py --quick

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

doc:
	$(CARGO) doc --workspace --no-deps

clean:
	$(CARGO) clean
	rm -rf bench-data results data .repflow
