# `make test` and `make demo` work on a fresh clone: they create .venv when missing,
# install torch==2.13.0 first (the CPU wheel; any other torch request pulls CUDA),
# then the project with its exact pins.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: test demo lint setup clean arm-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,demo,minilm]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/pt2e-int8 demo

# aarch64 under qemu-user: sets up its kit once in ~/.cache/pt2e-int8/arm (nothing in the repo, only
# Debian's qemu-user-static system-wide), exports the demo and MiniLM artifacts, runs each on emulated
# Neoverse-N1 (dotprod) and max,sme=off (i8mm) CPUs against x86, then the `-m arm` tests. The demo's
# run traces which int8 instructions ran; MiniLM's does not (same kernel families, and a trace
# needs one emulated process per artifact).
ARM_OUT ?= out/arm-check
arm-check: $(STAMP)
	$(BIN)/python -m tools.arm.setup_cache
	test -f $(ARM_OUT)/demo/qat.pte || $(BIN)/pt2e-int8 demo -o $(ARM_OUT)/demo
	$(BIN)/python -m tools.arm.artifacts digits $(ARM_OUT)/demo
	test -f $(ARM_OUT)/minilm/inputs.pt -a -f $(ARM_OUT)/minilm/minilm-float.pte || HF_HUB_OFFLINE=1 $(BIN)/python -m tools.arm.artifacts minilm $(ARM_OUT)/minilm
	$(BIN)/python -m tools.arm.check $(ARM_OUT)/demo
	$(BIN)/python -m tools.arm.check $(ARM_OUT)/minilm --no-trace
	$(BIN)/python -m pytest -q -m arm tests/arm

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out .pytest_cache
