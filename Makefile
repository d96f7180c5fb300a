# The two commands of the README. Each does its own set-up (.ci/setup).
.PHONY: setup demo test bench install uninstall

# `make install` puts the binary and the systemd unit under $(DESTDIR)$(PREFIX)
# (default /usr/local: the path the unit's ExecStart names) and /etc/systemd/system.
PREFIX ?= /usr/local
SYSTEMD_DIR ?= /etc/systemd/system
# Where cargo puts its outputs: CARGO_TARGET_DIR when set, else ./target
# (asked of cargo itself, so a target dir set in .cargo/config is honoured too).
TARGET_DIR = $(shell cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

setup:
	bash .ci/setup

demo: setup
	cargo run --release -p linecap -- demo --out linecap-demo

test: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --features linecap/dpdk,bench/dpdk -- -D warnings
	cargo test --workspace
	cargo test -p linecap --features dpdk --bins --test dpdk
	bash .ci/privileged-tests

install:
	cargo build --release -p linecap
	install -D -m 0755 "$(TARGET_DIR)/release/linecap" "$(DESTDIR)$(PREFIX)/bin/linecap"
	install -D -m 0644 docs/linecap.service "$(DESTDIR)$(SYSTEMD_DIR)/linecap.service"
	@echo "installed $(DESTDIR)$(PREFIX)/bin/linecap and $(DESTDIR)$(SYSTEMD_DIR)/linecap.service"
	@echo "then: systemctl daemon-reload && systemctl enable --now linecap (profile: /etc/linecap/probe.toml)"

uninstall:
	rm -f "$(DESTDIR)$(PREFIX)/bin/linecap" "$(DESTDIR)$(SYSTEMD_DIR)/linecap.service"

bench: setup
	cargo run --release -p bench -- all --seconds 5
