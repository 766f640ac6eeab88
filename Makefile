# bmx7-wg: every entry point a developer, CI or a new user needs. Run as root.
PYTHON_DEB := .venvs/debian/bin/python
PYTHON_PYPI := .venvs/pypi/bin/python
PYTEST_ARGS ?=

.PHONY: demo demo-static demo-clean test test-setup lint unit integration test-pypi test-ansible test-bmx7 test-lab test-vm bench bench-kernel bench-paths bench-lab deb test-deb test-systemd clean

## demo: a BMX7 mesh of three nodes in a line of network namespaces (the real bmx7: BMX7=PATH, else
## built by scripts/build-bmx7 from the pinned source; BMX7=stand-in, or a failed build, runs the
## stand-in and says so), `bmx7-wg run` on each: tunnels form by themselves, a ping crosses the
## middle node, a trust change; the mesh stays up until `make demo-clean`
demo:
	demo/demo.sh mesh

## demo-static: two network namespaces, one static WireGuard tunnel set up by `bmx7-wg apply`
demo-static:
	demo/demo.sh static

demo-clean:
	demo/demo.sh clean

## test: install what the tests need, then run them all
test: test-setup lint unit integration test-pypi test-bmx7 test-lab test-vm test-deb test-systemd
	@echo "make test: all suites passed"

test-setup:
	scripts/setup-test-env

lint: test-setup
	.venvs/debian/bin/ruff check bmx7_wg bmx7_wg_lab tests bench
	.venvs/debian/bin/mypy

# Unit and namespace tests against Debian bookworm's libraries (what the .deb runs with).
unit: test-setup
	PYTHONPATH=$(CURDIR) $(PYTHON_DEB) -m pytest -q -p no:cacheprovider tests/unit tests/fuzz $(PYTEST_ARGS)

# The metrics suite scrapes with Debian's prometheus-node-exporter and lints with promtool
# (package prometheus).
METRICS_PACKAGES := prometheus prometheus-node-exporter

integration: test-setup
	scripts/ensure-packages $(METRICS_PACKAGES)
	PYTHONPATH=$(CURDIR) $(PYTHON_DEB) -m pytest -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

# The same suites against the current PyPI releases of pyroute2, cryptography and systemd-python.
# (The Ansible role, the long fault/churn runs and the demo, which runs Debian's python3, do not depend
# on the library versions: once is enough.)
test-pypi: test-setup
	scripts/ensure-packages $(METRICS_PACKAGES)
	PYTHONPATH=$(CURDIR) $(PYTHON_PYPI) -m pytest -q -p no:cacheprovider tests/unit tests/integration \
		--ignore=tests/integration/test_ansible.py --ignore=tests/integration/test_churn.py \
		--ignore=tests/integration/test_faults.py --ignore=tests/integration/test_bench_smoke.py \
		--ignore=tests/integration/test_demo.py $(PYTEST_ARGS)

## test-bmx7: the mesh behaviour against the real bmx7 (tests/bmx7): a line of namespaces, each with a
## real bmx7 daemon and `bmx7-wg run`; and the stand-in held to it (tests/bmx7/test_conformance.py).
## bmx7 is BMX7=PATH (a build or an installed binary), else built by scripts/build-bmx7 from the pinned
## source (BMX7_ORIG=FILE, ../shared/upstream/, or downloaded): no source, no pass.
test-bmx7: test-setup
	BMX7="$(BMX7)" PYTHONPATH=$(CURDIR) $(PYTHON_DEB) -m pytest -q -p no:cacheprovider tests/bmx7 $(PYTEST_ARGS)

## test-lab: bmx7-wg-lab with the real bmx7 (scripts/build-bmx7): a ring of six nodes and a fault of
## each kind, down after a killed up, a name clash, measure on four nodes (about 6 minutes)
test-lab: test-setup
	scripts/ensure-packages iproute2 procps wireguard-go wireguard-tools
	BMX7=$$(scripts/build-bmx7) PYTHONPATH=$(CURDIR) $(PYTHON_DEB) -m pytest -q -p no:cacheprovider tests/lab $(PYTEST_ARGS)

## test-vm: Debian bookworm's own kernel in QEMU (kernel WireGuard): the kernel backend's tests with
## pyroute2 0.7.2 and current PyPI, and the core and mesh scenarios (test_static.py, test_mesh.py)
## with backend = "kernel", and the real bmx7's line forming its mesh over kernel WireGuard
## (bmx7 built on the host first, by scripts/build-bmx7)
test-vm: test-setup
	bmx7=$$(scripts/build-bmx7 | tail -n 1) && \
	vm/run --timeout 3000 -e BMX7_WG_TEST_BACKEND=kernel -e BMX7=$$bmx7 -- sh -c '\
		.venvs/debian/bin/python -m pytest -q -p no:cacheprovider tests/vm tests/unit/test_kernelwg.py \
			tests/integration/test_static.py tests/integration/test_mesh.py \
			tests/bmx7/test_real_mesh.py::test_line_joins_through_bmx7_routes_and_follows_a_key_change && \
		.venvs/pypi/bin/python -m pytest -q -p no:cacheprovider tests/vm tests/unit/test_kernelwg.py'

## bench: bmx7-wg beside `wg` on wireguard-go, reaction latency, idle footprint -> bench/RESULTS.md
bench: test-setup
	PYTHON=$(PYTHON_DEB) bench/run

## bench-kernel: the same static-peer comparison on the kernel backend, in the VM harness
## (QEMU/TCG: only the ratios carry over) -> bench/kernel-results.json, bench/RESULTS.md
bench-kernel: test-setup
	PYTHON=$(PYTHON_DEB) bench/run-kernel

## bench-paths: what each hand-written speed path saves, end to end, on wireguard-go and on the kernel
## backend (VM) -> bench/paths-userspace.json, bench/paths-kernel.json (about 35 minutes; HACKING.md)
bench-paths: test-setup
	PYTHON=$(PYTHON_DEB) bench/run-paths

## bench-lab: bmx7-wg-lab measure at 10, 25 and 50 nodes (line, grid, random) with the real bmx7
## -> bench/lab/*.json and *.svg, the table in bench/RESULTS.md (about 50 minutes on two cores)
bench-lab: test-setup
	PYTHON=$(PYTHON_DEB) bench/run-lab

## Ansible role: the example playbook against a network namespace (ansible-core pinned in tests/ansible/requirements.txt)
test-ansible: test-setup
	tests/ansible/install-ansible >/dev/null
	PYTHONPATH=$(CURDIR) $(PYTHON_DEB) -m pytest -q -p no:cacheprovider tests/integration/test_ansible.py $(PYTEST_ARGS)

clean:
	rm -rf .venvs .cache build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

## Debian packages: bmx7-wg, and bmx7 + bmx7-plugins from bmx7's pinned source (scripts/bmx7-orig:
## BMX7_ORIG=FILE, a local copy, or downloaded and verified), built in a clean environment into
## .cache/deb/; test-deb: their quality gates (lintian, piuparts, a clean install, autopkgtests)
deb:
	bash tests/deb/build.sh

test-deb:
	bash tests/deb/check.sh

## test-systemd: the .deb under real systemd in a QEMU VM (bookworm image, Debian's kernel)
test-systemd:
	tests/systemd/run.sh
