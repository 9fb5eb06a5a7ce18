# The platform's entry points. `make serve` and `make test` install whatever is missing first.
# IAAS_* settings come from the environment, then configs/iaas.env, then the built-in defaults.

PYTHON      := .venv/bin/python
TINY_IMAGE  := images/tiny-linux.qcow2
# The same guest with nothing listening to the ACPI power button (graceful shutdown is ignored).
DEAF_IMAGE  := images/tiny-linux-noacpi.qcow2
PYTEST_ARGS ?=

.PHONY: setup setup-dev image db-init db-clean serve serve-prod test test-fast test-e2e vm-cleanup bench lint docs broker worker

setup:
	REQUIREMENTS=requirements.txt scripts/setup.sh

setup-dev:
	REQUIREMENTS=requirements-dev.txt scripts/setup.sh

# Rebuilt when the recipe changes (the script itself reuses an existing file).
$(TINY_IMAGE): scripts/build_tiny_image.sh | setup
	rm -f $@
	scripts/build_tiny_image.sh $@

$(DEAF_IMAGE): scripts/build_tiny_image.sh | setup
	rm -f $@
	TINY_ACPI=ignore scripts/build_tiny_image.sh $@

image: $(TINY_IMAGE) $(DEAF_IMAGE)

db-init: setup
	$(PYTHON) -m src.cli db-init

db-clean: setup
	$(PYTHON) -m src.cli db-clean

# Registers the tiny test guest too, so a new user can boot a VM at once, makes sure the
# network VMs join (IAAS_NETWORK) is running, and checks that KVM guests run here (where they
# do not, IAAS_DOMAIN_TYPE=qemu goes to configs/iaas.env, unless IAAS_DOMAIN_TYPE is set).
serve: db-init $(TINY_IMAGE)
	$(PYTHON) -m src.cli install-image tiny-linux $(TINY_IMAGE)
	$(PYTHON) -m src.cli ensure-network
	$(PYTHON) -m src.cli probe-kvm
	exec $(PYTHON) -m src.serve --server wsgiref

# The same API behind waitress, which buffers whole requests before a worker sees them.
serve-prod: db-init $(TINY_IMAGE)
	$(PYTHON) -m src.cli install-image tiny-linux $(TINY_IMAGE)
	$(PYTHON) -m src.cli ensure-network
	$(PYTHON) -m src.cli probe-kvm
	exec $(PYTHON) -m src.serve --server waitress

# Orphans only; ALL=1 also removes every VM of this installation and its records.
vm-cleanup: setup
	$(PYTHON) -m src.cli vm-cleanup $(if $(ALL),--all)

# Every tier: unit, integration (libvirt test driver), e2e (qemu:///system, real guest).
# pytest's exit 5 (no tests collected) fails this target like any other non-zero exit.
test: lint $(TINY_IMAGE) $(DEAF_IMAGE)
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS) tests

test-fast: setup-dev
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS) tests/unit tests/integration

test-e2e: setup-dev $(TINY_IMAGE) $(DEAF_IMAGE)
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS) tests/e2e

bench: setup-dev $(TINY_IMAGE)
	$(PYTHON) scripts/bench.py

# Style, types, and the layer contracts of .importlinter (a wrong import fails here).
lint: setup-dev
	$(PYTHON) -m ruff check src tests scripts
	$(PYTHON) -m mypy --strict src
	.venv/bin/lint-imports

# Regenerate the tables in docs/ that mirror code (errors, settings, routes, lifecycle).
docs: setup-dev
	$(PYTHON) scripts/docs.py

# Phase 2: RabbitMQ on this machine, a vhost and a user; IAAS_BROKER_URL goes to configs/iaas.env.
broker:
	scripts/broker.sh

# Celery workers in the foreground: one per host, or HOSTS=gpu-01,gpu-02 for some.
worker: setup
	exec $(PYTHON) -m src.worker $(if $(HOSTS),--hosts $(HOSTS)) $(if $(IMAGES),--images)
