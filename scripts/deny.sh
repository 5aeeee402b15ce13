#!/usr/bin/env bash
# cargo deny (advisories, licenses, duplicates, sources) against the advisory database snapshot
# in config/advisory-db: the RustSec entries of every crate in Cargo.lock, taken from
# github.com/rustsec/advisory-db (this machine and CI cannot reach GitHub, so the snapshot is
# checked in and its date is printed). Installs cargo-deny from crates.io if it is missing.
#
#   scripts/deny.sh                      # run the checks
#   scripts/deny.sh --refresh <checkout> # re-take the snapshot from an advisory-db checkout
set -euo pipefail
cd "$(dirname "$0")/.."
snap=config/advisory-db

if [ "${1:-}" = "--refresh" ]; then
    src=${2:?usage: scripts/deny.sh --refresh <advisory-db checkout>}
    rm -rf "$snap/crates"
    mkdir -p "$snap/crates"
    for c in $(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.lock | sort -u); do
        if [ -d "$src/crates/$c" ]; then cp -r "$src/crates/$c" "$snap/crates/"; fi
    done
    cp "$src/LICENSE.txt" "$snap/LICENSE.txt"
    git -C "$src" log -1 --format='%H %cI' > "$snap/SNAPSHOT"
    echo "deny: snapshot of $(cut -d' ' -f2 "$snap/SNAPSHOT") with $(find "$snap/crates" -name '*.md' | wc -l) advisories"
    exit 0
fi

if ! command -v cargo-deny >/dev/null; then
    echo "deny: installing cargo-deny (crates.io)"
    cargo install --locked cargo-deny@0.20.2
fi
# cargo-deny reads the database from a git checkout named after the URL's hash in db-path.
db=target/advisory-db/advisory-db-3157b0e258782691
rm -rf "$db"
mkdir -p "$db"
cp -r "$snap/crates" "$db/"
when=$(cut -d' ' -f2 "$snap/SNAPSHOT")
(
    cd "$db"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="$when" GIT_COMMITTER_DATE="$when" \
        git -c user.name=wf -c user.email=wf@localhost commit -q -m "advisory-db snapshot $when"
)
echo "deny: advisory database snapshot of $when ($(find "$db/crates" -name '*.md' | wc -l) advisories of crates in Cargo.lock)"
# cargo metadata must not need the network either: fetch once (crates.io), then offline.
cargo fetch --locked >/dev/null
cargo deny --offline --log-level error check advisories bans licenses sources
