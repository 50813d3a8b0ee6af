# Two commands on a fresh machine:  `make demo` (the main job, end to end)  and  `make test`.
.PHONY: setup demo test bench policy evaluate images

.venv/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: .venv/.setup-done

demo: setup
	.venv/bin/tandem demo

test: setup images
	.venv/bin/python -m pytest -q --durations=25  # the 25 slowest tests, so the suite keeps to its budget

images: setup  # the compose testbed: Docker (installed and started if needed) and the images built from deploy/
	bash scripts/setup-docker.sh
	bash deploy/build-images.sh

bench: setup
	.venv/bin/python bench/psd.py
	.venv/bin/python bench/linkemu.py
	.venv/bin/python bench/reproducibility.py
	.venv/bin/python bench/controller.py
	.venv/bin/python bench/scheduler.py
	.venv/bin/python bench/testbed.py
	.venv/bin/python bench/load.py

policy: setup  # train the shipped mappo policy (docs/twin.md; ~40 min here)
	bash scripts/train-policy.sh

evaluate: setup  # every policy on held-out traces: docs/evaluation.md and docs/evaluation/*.png
	bash scripts/evaluate.sh
