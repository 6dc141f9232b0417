# repflow — see README.md. Every target works on a fresh machine after `make setup`.
PYTHON ?= python3
CARGO  ?= cargo

.PHONY: setup build run test fixtures bench bench-quick lint doc clean

## Python packages of the reference implementation (fixtures, benchmark).
setup:
	$(PYTHON) -m pip install --quiet -r scripts/requirements.txt

build:
	$(CARGO) build --release

## The main job: score two generated layers with every metric (until the pipeline lands).
run: setup build
	$(PYTHON) scripts/demo_data.py results/demo
	./target/release/repflow score results/demo/x.npy results/demo/y.npy --metric all
	./target/release/repflow score results/demo/x.npy results/demo/y.npy --metric all --json > results/demo/scores.json
	@echo "wrote results/demo/scores.json"

## All tests (unit, reference fixtures, invariances, command line), optimised build.
test:
	$(CARGO) test --workspace --release

## Regenerate tests/fixtures from the Python reference (numpy, scipy, scikit-learn, POT).
fixtures:
	$(PYTHON) scripts/make_fixtures.py

## repflow vs the Python reference on the same matrices, in the same run.
bench: setup
	$(CARGO) build --release --benches
	$(PYTHON) scripts/bench.py

bench-quick: setup
	$(CARGO) build --release --benches
	$(PYTHON) scripts/bench.py --quick

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

doc:
	$(CARGO) doc --workspace --no-deps

clean:
	$(CARGO) clean
	rm -rf bench-data results
