#!/usr/bin/env bash
# Makes the advisory snapshot in deny/advisory-db the database cargo-deny reads offline
# (`cargo deny --offline check`). cargo-deny opens a git checkout under deny.toml's db-path,
# named after the database URL, and dates it by its HEAD; so the snapshot is committed into a
# scratch repository there, dated as the snapshot is (deny/advisory-db/SNAPSHOT), for
# deny.toml's maximum-db-staleness to judge. Needs git; writes only under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

src=deny/advisory-db
# deny.toml: db-path = "target/advisory-dbs", db-urls = ["https://github.com/rustsec/advisory-db"];
# cargo-deny's directory name for that URL (it logs it with `cargo deny -L debug`).
db=target/advisory-dbs/advisory-db-3157b0e258782691
date=$(head -n1 "$src/SNAPSHOT")
stamp="${date}T00:00:00Z"

rm -rf "$db"
mkdir -p "$db"
cp -R "$src/crates" "$db/crates"
git -C "$db" init -q -b main
git -C "$db" add -A
GIT_AUTHOR_DATE="$stamp" GIT_COMMITTER_DATE="$stamp" \
  git -C "$db" -c user.name=lcw -c user.email=lcw@localhost -c commit.gpgsign=false \
  commit -q -m "RustSec advisory snapshot of $date (deny/advisory-db)"
# Without a FETCH_HEAD, cargo-deny takes the later of HEAD's commit time and its file time.
touch -d "$stamp" "$db/.git/HEAD"
echo "advisory snapshot of $date: $(find "$db/crates" -name '*.md' | wc -l) advisories in $db"
