# Developer entry points for dirsync. `just --list` shows them all.
#
#   just test       the test suite (the README's test command: cargo test)
#   just run DIR    run one node on DIR from a release build
#   just bench      benchmarks (bench/bench.py, loopback in a private netns)
#   just bench-micro  micro-benchmarks of codec, hashing and deltas (divan)
#   just e2e        docker-compose cluster end-to-end checks (docker/e2e.py), then `just mixed`
#   just mixed      two old and two new nodes on loopback, then a rolling upgrade (scripts/mixed_versions.py)
#   just browser    the dashboard in headless Chromium, on three nodes on loopback (scripts/dashboard_browser.py)
#   just sim [N]    long simulation sweeps (N seeds per scenario, default 256)
#   just fuzz       long fuzzing runs (cargo-fuzz on nightly, else long proptest runs)

set shell := ["bash", "-euo", "pipefail", "-c"]

target := "x86_64-unknown-linux-gnu"
static_bin := "target/" + target + "/release/dirsync"
context := "target/e2e-context"

# Run the test suite (the README's test command).
test:
    cargo test

# Long fuzzing. With a nightly toolchain and cargo-fuzz: the coverage-guided
# targets in fuzz/ for FUZZ_SECONDS each (default 300). Without (this is the
# case on stable-only machines): the same entry points as bounded proptest
# runs with DIRSYNC_FUZZ_CASES cases each (default 100000; `cargo test`
# runs 512) and DIRSYNC_FUZZ_SEED, plus DIRSYNC_FUZZ_CONNECTIONS hostile
# connections per seed against simulated nodes (SIM_SEEDS seeds).
#
# Long fuzzing runs (see above for the knobs).
fuzz:
    #!/usr/bin/env bash
    set -euo pipefail
    if cargo +nightly fuzz --version >/dev/null 2>&1; then
        cd fuzz
        for t in frame announce signature delta record connection; do
            cargo +nightly fuzz run "$t" -- -max_total_time="${FUZZ_SECONDS:-300}"
        done
    else
        echo "cargo-fuzz on nightly not available: long proptest and simulation runs instead"
        DIRSYNC_FUZZ_CASES="${DIRSYNC_FUZZ_CASES:-100000}" nice cargo test --lib fuzz -- --nocapture
        DIRSYNC_FUZZ_CONNECTIONS="${DIRSYNC_FUZZ_CONNECTIONS:-2000}" SIM_SEEDS="${SIM_SEEDS:-8}" \
            nice cargo test -p dirsync-sim --test hostile -- --nocapture
    fi

# `cargo test` runs a fixed seed plus a few swept ones per scenario (8 for
# most, fewer for the slow ones); a failing seed replays alone
# with SIM_SEED=S (SIM_LOG=dirsync=debug echoes the nodes' logs).
#
# Long simulation sweeps: every scenario over SEEDS seeds.
sim SEEDS="256":
    SIM_SEEDS={{SEEDS}} nice cargo test -p dirsync-sim

# Run one node on DIR (extra flags are passed through), release build.
run DIR *FLAGS:
    cargo run --release -- {{quote(DIR)}} {{FLAGS}}

# The private network namespace makes the loopback byte counters count only
# the measured traffic; it needs root or user namespaces. Knobs (bench.py):
# BENCH_REPEAT, BENCH_ONLY, BENCH_SCALE, BENCH_SETTLE, BENCH_RESCAN,
# DIRSYNC_BIN. The million-path workload (issue "A million files", a table
# of its own against the issue's targets) runs only when named:
# BENCH_ONLY=scale, 1,000,000 x BENCH_SCALE paths (0.02 for a quick try).
#
# Benchmarks against rsync and a raw copy: bench/bench.py on loopback in a private network namespace.
bench:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v rsync >/dev/null || { apt-get update -qq && apt-get install -y -qq rsync; }
    nice cargo build --release --bin dirsync
    ns=(unshare -n); [ "$(id -u)" = 0 ] || ns=(unshare -rn)
    exec "${ns[@]}" sh -c 'ip link set lo up && exec python3 bench/bench.py'

# Micro-benchmarks (benches/micro.rs): frame codec, blake3, delta steps.
bench-micro:
    nice cargo bench --bench micro

# Build the statically linked release binary used by the docker image.
static:
    RUSTFLAGS='-C target-feature=+crt-static' nice cargo build --release --target {{target}} --bin dirsync

# Build the image dirsync:e2e: FROM scratch around the static binary, small context.
image: static
    rm -rf {{context}} && mkdir -p {{context}}
    cp {{static_bin}} {{context}}/dirsync
    # BuildKit needs the buildx plugin; fall back to the classic builder without it.
    if docker buildx version >/dev/null 2>&1; then b=1; else b=0; fi; \
      DOCKER_BUILDKIT=$b docker build --quiet -t dirsync:e2e -f docker/Dockerfile {{context}} >/dev/null
    docker run --rm --network none dirsync:e2e --version

# End-to-end: build the image, run the cluster checks; always tears the cluster down.
e2e: image
    python3 docker/e2e.py
    python3 scripts/mixed_versions.py
    python3 scripts/dashboard_browser.py

# Mixed protocol versions: builds the previous version's last commit (docs/PROTOCOL.md)
# in a worktree, runs two old and two new nodes on loopback, then upgrades the old ones.
mixed:
    python3 scripts/mixed_versions.py

# The dashboard in a real browser (headless Chromium, installed with apt when
# missing): reads the page of three real nodes, keeps a real conflict copy with
# a click, checks the token rules, and saves target/dashboard.png mid-transfer.
browser:
    python3 scripts/dashboard_browser.py
