# edgepair: two set-up commands, `make demo` and `make test`, each installing what it needs (run as root on Debian).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# OS packages: footage for the demo (vtest.avi), etcd for the pair, GStreamer RTSP cameras, Chromium for reports,
# for the Ansible lab: systemd-nspawn hosts with their own sshd, nftables; promtool and amtool (and the servers of
# the local alert test) from Prometheus's packages, whose services this step disables where it installed them.
APT_PACKAGES := opencv-doc etcd-server etcd-client \
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav chromium \
  systemd-container openssh-server nftables prometheus prometheus-alertmanager
STAMP := $(VENV)/.installed

.PHONY: setup apt venv model demo test test-all test-e2e test-lab test-lab-drills lint typecheck bench clean

setup: apt venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing OS packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: OS packages$$missing are missing; run as root or install them with apt-get" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  if [ -d /run/systemd/system ]; then \
	    for svc in prometheus prometheus-alertmanager; do \
	      case " $$missing " in *" $$svc "*) systemctl disable --now $$svc >/dev/null 2>&1 || true;; esac; \
	    done; \
	  fi; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,dev]'
	@touch $(STAMP)

model: setup
	$(BIN)/edgepair model install

demo: setup model
	$(BIN)/edgepair pair demo --config cluster/examples/pair.yaml --seconds 90

lint: venv
	$(BIN)/ruff check actors cluster storage failover tests bench
	$(BIN)/ruff format --check actors cluster storage failover tests bench

typecheck: venv
	$(BIN)/mypy

# The suite without the tests marked slow (long drills, the Ansible lab): what CI runs, well under 30 minutes.
test: setup lint typecheck audit
	$(BIN)/pytest -q --durations=25 -m "not slow" tests

# Everything, the slow drills and the two-host Ansible lab included (root, about 15 more minutes).
test-all: setup lint typecheck
	$(BIN)/pytest -q tests

test-e2e: setup
	$(BIN)/pytest -q tests/e2e

# The three-host lab (root), in one session on one lab and one store: the Ansible scenarios, then the six lab failover
# drills through drill.yml on the store they leave. .ci/run runs it after `make test`.
test-lab: setup
	$(BIN)/pytest -q --durations=25 -m "not lab_extra" tests/e2e/test_ansible.py tests/e2e/test_lab_drills.py

# The lab's six failover drills (the store installed first when the lab has none).
test-lab-drills: setup
	$(BIN)/pytest -q tests/e2e/test_lab_drills.py

bench: setup model
	$(BIN)/python bench/pipeline_fps.py

clean:
	rm -rf $(VENV) build dist *.egg-info

# The release bundle's lock (README, "The locked supply chain"): every runtime dependency of edgepair[cpu] pinned
# with the sha256 of every file PyPI has for that version, resolved for the stores' platform (Linux x86_64,
# glibc >= 2.36, CPython 3.11) whatever machine runs this. Keeps the existing pins unless pyproject.toml needs
# otherwise; LOCK_ARGS=--upgrade moves everything to the newest allowed, LOCK_ARGS="--upgrade-package ray" one package.
.PHONY: lock audit
LOCK := deploy/requirements/bundle-cpu.lock
LOCK_PLATFORM := --python-version 3.11 --python-platform x86_64-manylinux_2_36
LOCK_ARGS ?=
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra cpu --generate-hashes $(LOCK_PLATFORM) $(LOCK_ARGS) -q \
	  --custom-compile-command "make lock" -o $(LOCK)
	$(BIN)/uv pip compile deploy/requirements/build.in --generate-hashes $(LOCK_PLATFORM) $(LOCK_ARGS) -q \
	  --custom-compile-command "make lock" -o deploy/requirements/build.lock

# Known vulnerabilities in the locked set (pip-audit, PyPI's then OSV's service); with neither reachable it prints
# `audit: SKIPPED (reason)` and passes. About 15 to 35 s.
audit: venv
	$(BIN)/python deploy/audit-lock.py $(LOCK)
