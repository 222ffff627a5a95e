# reclip_ros: the commands in README.md.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup build test lint demo bench soak lock clean

setup:
	bash scripts/setup_venv.sh

# Refresh requirements.lock from requirements.txt in a scratch venv (then run make setup).
lock:
	bash scripts/lock_requirements.sh

# Fast rebuild of messages + module install (new modules need it; edits are live).
build:
	bash scripts/setup_venv.sh

test:
	@test -x $(PY) || { echo "run 'make setup' first"; exit 2; }
	$(PY) -m pytest -rs test

lint:
	$(PY) -m ruff check reclip_ros test scripts launch

demo:
	@test -x $(PY) || { echo "run 'make setup' first"; exit 2; }
	$(VENV)/bin/reclip demo --out demo_output

bench:
	$(VENV)/bin/reclip bench --random-init vit-b-32

# Long run of the node (30 minutes); SOAK_ARGS adds options, e.g. SOAK_ARGS="--duration 600".
soak:
	$(VENV)/bin/reclip soak --duration 1800 --json soak_report.json $(SOAK_ARGS)

clean:
	rm -rf build log install
