# The two commands of the README: `make demo` and `make test`.
.PHONY: setup demo test lint bench down

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup lint
	.venv/bin/python -m pytest -v --durations=10

lint:
	.venv/bin/ruff check paas controller agent tests benchmarks
	.venv/bin/lint-imports

bench: setup
	.venv/bin/python benchmarks/scheduler.py
	.venv/bin/python benchmarks/deploy.py
	.venv/bin/python benchmarks/build.py
	.venv/bin/python benchmarks/rollout.py
	.venv/bin/python benchmarks/failover.py

down:
	.venv/bin/paas down
