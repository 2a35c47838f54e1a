# The two commands of the README. Each sets up .venv (pinned dependencies) on first use.
.PHONY: demo test lint

demo:
	bash scripts/bootstrap.sh
	.venv/bin/dexport demo

test:
	bash scripts/bootstrap.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check .
