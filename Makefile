# Set-up is the project's own job: every target creates .venv and installs from pyproject.toml first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= artifacts

.PHONY: install demo test test-census bench accuracy lint clean android-runner

$(STAMP): pyproject.toml setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# timm's own code, outside the venv's path (its torchvision has no CPU build for this torch): the tests run it in a
# process of their own as the reference that published checkpoints must reproduce (tests/timm_reference)
TIMM_REFERENCE := $(VENV)/timm-reference/.installed
$(TIMM_REFERENCE): $(STAMP)
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/timm-reference timm==1.0.31
	touch $@

install: $(STAMP) $(TIMM_REFERENCE)

demo: $(STAMP)
	$(BIN)/edgevit models
	$(BIN)/edgevit export lvt --target all --output-dir $(OUT) --force
	$(BIN)/edgevit verify $(OUT)/lvt-executorch-xnnpack-fp32.pte
	$(BIN)/edgevit bench $(OUT)/lvt-executorch-xnnpack-fp32.pte $(OUT)/lvt-tflite-fp32.tflite \
		$(OUT)/lvt-onnx-fp32.onnx $(OUT)/lvt-coreml-fp16.mlpackage --rounds 3 \
		--json $(OUT)/bench.json --plot $(OUT)/bench.png

# two workers: most of the suite's time is single-threaded graph lowering, so both cores stay busy; the
# slowest tests are listed at the end
test: $(STAMP) $(TIMM_REFERENCE)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

# the suite as `make test`, counting the tests that run a real runtime (tests/runtime_census/README.md)
CENSUS ?= $(OUT)/runtime-census.log
test-census: $(STAMP) $(TIMM_REFERENCE)
	mkdir -p $(dir $(CENSUS)) && rm -f $(CENSUS)
	PYTHONPATH=$(CURDIR)/tests/runtime_census EDGEVIT_RUNTIME_CENSUS=$(abspath $(CENSUS)) \
		$(BIN)/python -m pytest -q -n 2 --dist worksteal; status=$$?; \
		$(BIN)/python tests/runtime_census/report.py $(CENSUS); exit $$status

# every table into docs/results.md; bench_model.py keeps the README's summary in step (about 70 minutes)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py --all --rounds 5 --runs 30 --write-results
	$(BIN)/python benchmarks/bench_fold.py --rounds 3 --write-results
	$(BIN)/python benchmarks/bench_int8.py --rounds 3 --runs 30 --write-results
	$(BIN)/python benchmarks/bench_int8_gemm.py --rounds 3 --runs 50 --write-results

# every benchmarked model (registered with benchmark=True) trained on the offline digits set: fp32, PTQ and QAT
# accuracy per target; then every int8 recipe's gate on those weights (about 3 hours)
accuracy: $(STAMP)
	$(BIN)/python benchmarks/accuracy.py --write-results
	$(BIN)/python benchmarks/int8_gates.py --write-results

lint: $(STAMP)
	$(BIN)/ruff check edgevit tests benchmarks
	$(BIN)/ruff format --check edgevit tests benchmarks

# executor_runner for arm64 phones (edgevit bench --device android); says what is missing where it cannot build
android-runner:
	scripts/build_android_runner.sh

clean:
	rm -rf $(VENV) $(OUT) build dist *.egg-info
