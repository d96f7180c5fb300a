# The two commands of the README. Each does its own set-up (.ci/setup).
.PHONY: setup demo test bench

setup:
	bash .ci/setup

demo: setup
	cargo build --release -p linecap
	./target/release/linecap demo --out linecap-demo

test: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --features linecap/dpdk,bench/dpdk -- -D warnings
	cargo test --workspace
	cargo test -p linecap --features dpdk --bins --test dpdk
	bash .ci/privileged-tests

bench: setup
	cargo run --release -p bench -- all --seconds 5
