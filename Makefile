# pimesh — build, test and ship.
#
#   make run     run the agent on its embedded default (simulated board)
#   make test    install what the tests need (once) and run the whole test suite
#   make lint    rustfmt and clippy, as CI expects them
#   make bench   a 3-instance mesh and Mosquitto on loopback: latencies, throughput, memory
#   make fuzz    every fuzz target for FUZZ_SECONDS each (default 20; tests/fuzz/, FUZZING.md)
#   make sim     a long campaign of the mesh simulator: SEEDS schedules (default 100000)
#   make chaos   faults against 5 real instances for CHAOS_SECONDS (default 300), seed CHAOS_SEED
#   make soak    5 instances under mixed load for SOAK_SECONDS (default 600): memory and open files

CARGO ?= cargo
APT_PACKAGES := mosquitto mosquitto-clients socat iproute2 iptables python3-paho-mqtt chromium

.PHONY: run test deps lint release bench fuzz chaos soak sim

run:
	$(CARGO) run -- run

# Tests drive Debian's mosquitto clients and paho-mqtt (as Home Assistant uses it), and
# headless Chromium for the web page (tests/web.rs); install them when missing (root or sudo).
deps:
	@missing=""; \
	for tool in mosquitto mosquitto_pub mosquitto_sub socat ip iptables-legacy chromium; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	/usr/bin/python3 -c 'import paho.mqtt.client' >/dev/null 2>&1 || missing="$$missing python3-paho-mqtt"; \
	if [ -n "$$missing" ]; then \
	  echo "installing test dependencies (missing:$$missing)"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

# The whole suite: unit and end-to-end tests, then the Pi builds under qemu, the unit and the
# .deb, then a few seconds of every fuzz target.
test: deps
	$(CARGO) test --all-targets
	bash tests/ship.sh
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) bash tests/fuzz/smoke.sh

# Coverage-guided fuzzing (cargo-fuzz on nightly, installed when missing); crashes land in
# tests/fuzz/artifacts/<target>/. FUZZING.md has the longer runs and how to reproduce one.
FUZZ_SECONDS ?= 20
FUZZ_SMOKE_SECONDS ?= 5
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/smoke.sh

# The deterministic mesh simulator (src/mesh/sim/) over SEEDS seeds from FIRST; `cargo test`
# runs seeds 0..999. A failing seed prints the command that runs it alone.
SEEDS ?= 100000
FIRST ?= 1000
sim:
	SIM_SEEDS=$(SEEDS) SIM_FIRST=$(FIRST) $(CARGO) test --release --lib mesh::sim::tests::long_campaign -- --ignored --nocapture

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

release:
	$(CARGO) build --release

# Release build of the agent and the benchmark (tests/bench/), then one run; prints figures.
bench: deps
	$(CARGO) test --release --test bench

# tests/faults.rs: agents in network namespaces (root, as CI has) with pulled cables, lossy,
# slow and reordering links, SIGKILL and restarts, and a full disk; the invariants are checked
# after every 40 s round. A failure prints the line that replays it, e.g.
# `CHAOS_SEED=1234 make chaos`; without CHAOS_SEED each run picks (and prints) a new seed.
CHAOS_SECONDS ?= 300
CHAOS_SEED ?=
SOAK_SECONDS ?= 600
chaos: deps
	CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_SEED=$(CHAOS_SEED) \
	  $(CARGO) test --release --test faults chaos_campaign -- --ignored --nocapture

# Samples every agent's RSS and open fds; fails when the last third's medians grew past the
# first third's by more than a modest slack, and prints the figures either way.
soak: deps
	SOAK_SECONDS=$(SOAK_SECONDS) CHAOS_SEED=$(CHAOS_SEED) \
	  $(CARGO) test --release --test faults soak_of_five_instances -- --ignored --nocapture

# --- Raspberry Pi: cross builds, deploy, package (files in cross/, see cross/README.md) ---
#
#   make pi [TARGET=…]                       build the release binary for a Pi
#   make deploy PI=pi@kitchen.local [TARGET=…] [CONFIG=pimesh.toml] [DRY_RUN=1]
#   make deb [TARGET=…]                      build the .deb (arm64 or armhf from TARGET)
#   make ship-test                           cross builds under qemu, unit, .deb, deploy dry run

TARGET ?= aarch64-unknown-linux-musl
CROSS_CONFIG ?= cross/Cross.toml
export CROSS_CONFIG

.PHONY: pi deploy deb ship-test

# cross (in Docker) when a Docker engine answers, else rustup's target and Debian's cross linker.
pi:
	@if command -v cross >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "make pi: cross build --release --target $(TARGET) (Docker, $(CROSS_CONFIG))"; \
	  cross build --release --target $(TARGET); \
	else \
	  echo "make pi: no cross or no Docker engine: building with the local toolchain"; \
	  bash cross/toolchain.sh $(TARGET) && $(CARGO) build --release --target $(TARGET); \
	fi

deploy:
	@test -n "$(PI)" || { echo "make deploy: name the Pi, e.g. make deploy PI=pi@kitchen.local"; exit 2; }
	$(if $(DRY_RUN),,$(MAKE) pi TARGET=$(TARGET))
	bash cross/deploy.sh --target $(TARGET) $(if $(CONFIG),--config $(CONFIG)) $(if $(DRY_RUN),--dry-run) $(PI)

# cargo-deb picks the Debian architecture from the target (arm64, armhf).
deb: pi
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked
	$(CARGO) deb --no-build --target $(TARGET)

ship-test:
	bash tests/ship.sh
