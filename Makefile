# The two entry points of the README: `make demo` and `make test`.
# Both create the shared virtual environment `.venv/` when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pins for this machine kind: pip on Python 3.11 takes these wheels from local
# disk, and PyPI's torchvision does not import beside other local torch builds (see README).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_PINS)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

demo: venv
	HF_HUB_OFFLINE=1 $(PY) examples/demo.py --output-dir outputs/demo

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

bench: venv
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_video_decoding.py

clean:
	rm -rf $(VENV) outputs build *.egg-info
