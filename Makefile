# U-Net Building Extractor: set-up, demo, tests and packaging.
# Every target installs what it needs (idempotently); run as root or with sudo.
SHELL := /bin/bash
PLUGIN := unet_buildings
APT_PACKAGES := qgis python3-qgis qgis-providers python3-rasterio python3-shapely \
                python3-gdal python3-venv python3-matplotlib zip
GUI_PACKAGES := xvfb xauth xdotool imagemagick
VENV := .venv
# Debian's python: it sees the system's QGIS, GDAL and rasterio (a pyenv python on PATH does not).
SYSTEM_PYTHON := /usr/bin/python3
PY := $(VENV)/bin/python
# QGIS looks for plugins in folders that contain a folder named after the plugin; a clone may be
# named anything, so a link with the fixed name points back at the repository root.
QGIS_ENV := QT_QPA_PLATFORM=offscreen QGIS_PLUGINPATH=$(CURDIR)/.qgis-plugins \
            QGIS_CUSTOM_CONFIG_PATH=$(CURDIR)/.qgis-profile PYTHONPATH=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
            PATH=$(CURDIR)/$(VENV)/bin:$$PATH

.PHONY: setup system-packages demo test package gui-check bench clean

setup: $(VENV)/.installed .qgis-plugins/$(PLUGIN)

system-packages:
	bash scripts/install_system_packages.sh $(APT_PACKAGES)

# GDAL's bindings are built against the system numpy's major version: pip must stay on it (numpy 1 on
# Debian 12, numpy 2 where the system has moved on), never pin one globally.
NUMPY_CONSTRAINT := $(SYSTEM_PYTHON) -c 'import numpy; m = int(numpy.__version__.split(".")[0]); print(f"numpy>={m},<{m + 1}")'

$(VENV)/.installed: requirements.txt | system-packages
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(NUMPY_CONSTRAINT) > $(VENV)/constraints.txt 2>/dev/null || : > $(VENV)/constraints.txt
	$(PY) -m pip install -q -r requirements.txt -c $(VENV)/constraints.txt
	touch $@

# test-only packages (pytest, pytest-qgis, hypothesis, onnxruntime), on top of the plugin's own
$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-dev.txt -c $(VENV)/constraints.txt
	touch $@

.qgis-plugins/$(PLUGIN):
	mkdir -p .qgis-plugins && ln -sfn .. $@

demo: setup
	$(QGIS_ENV) bash scripts/demo.sh

# lint, format and type checks first (seconds), then the tests; pyproject.toml says which rules and why
test: setup $(VENV)/.installed-dev
	$(PY) -m ruff check --quiet .
	$(PY) -m ruff format --check --quiet .
	$(PY) -m mypy
	$(QGIS_ENV) $(PY) -m pytest -q tests

bench: setup
	$(QGIS_ENV) bash -c 'for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done'

package:
	bash scripts/package.sh $(PLUGIN)

gui-check: setup
	bash scripts/install_system_packages.sh $(GUI_PACKAGES)
	$(QGIS_ENV) QT_QPA_PLATFORM=xcb bash scripts/gui_check.sh

clean:
	rm -rf $(VENV) .qgis-plugins .qgis-profile build dist demo-output
