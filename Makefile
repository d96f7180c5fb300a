# The two commands of the README. Each does its own set-up (.ci/setup).
.PHONY: setup demo test bench

setup:
	bash .ci/setup

demo: setup
	cargo run --release -p linecap -- demo --out linecap-demo

test: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

bench: setup
	cargo run --release -p bench -- all --seconds 5
