# pimesh — build, test and ship.
#
#   make run     run the agent on its embedded default (simulated board)
#   make test    install what the tests need (once) and run the whole test suite
#   make lint    rustfmt and clippy, as CI expects them

CARGO ?= cargo
APT_PACKAGES := mosquitto mosquitto-clients socat iproute2

.PHONY: run test deps lint release

run:
	$(CARGO) run -- run

# Tests drive Debian's mosquitto clients; install them when missing (root or sudo).
deps:
	@missing=""; \
	for tool in mosquitto mosquitto_pub mosquitto_sub socat ip; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing test dependencies (missing:$$missing)"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

test: deps
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

release:
	$(CARGO) build --release
