# The two commands of the README: `sudo make demo` and `sudo make test`.
# Each first does whatever set-up is missing (scripts/setup.sh is idempotent and quick when done).

VENV := .venv
TESTBED := $(VENV)/bin/testbed
PYTEST := $(VENV)/bin/pytest
DEMO ?= experiments/fatriot-fig11.yaml

.PHONY: demo test setup unit integration experiments clean doctor images vagrant-validate

setup:
	scripts/setup.sh all

demo: setup
	$(TESTBED) run $(DEMO)

test: setup
	$(PYTEST) -p no:cacheprovider tests/unit tests/integration tests/experiments

unit: setup
	$(PYTEST) -p no:cacheprovider tests/unit

integration: setup
	$(PYTEST) -p no:cacheprovider -m integration tests

experiments: setup
	$(PYTEST) -p no:cacheprovider tests/experiments

images: setup
	$(TESTBED) images build

doctor: setup
	$(TESTBED) doctor

clean:
	$(TESTBED) clean

vagrant-validate:
	vagrant validate --ignore-provider
