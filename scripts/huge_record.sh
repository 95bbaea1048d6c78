#!/usr/bin/env bash
# Feeds custload a field of SIZE bytes with no line end (default 1 GiB), as CSV, NDJSON and a
# JSON body, through stdin (a JSON body is spooled to a temp file: SIZE bytes of disk), with the default max_record_bytes (8 MiB), and checks that the record
# is one rejected row, that the rows around it load, and that peak memory stays far below the
# record's size. See docs/guarantees.md.
#
#   scripts/huge_record.sh [--size BYTES] [--dir DIR]
#
# Needs: a Rust toolchain, GNU time (/usr/bin/time). Takes about a minute at 1 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=$((1 << 30))
DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        *) echo "huge_record: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x /usr/bin/time ] || { echo "huge_record: needs GNU time at /usr/bin/time" >&2; exit 2; }

cargo build --release --quiet --bin custload
BIN=$PWD/target/release/custload
if [ -z "$DIR" ]; then
    DIR=$(mktemp -d)
    trap 'rm -rf "$DIR"' EXIT
fi
cd "$DIR"
printf '[pipelines.csv]\nformat = "csv"\n[pipelines.nd]\nformat = "ndjson"\n[pipelines.body]\nformat = "json"\n' > pipelines.toml

status=0
for pipeline in csv nd body; do
    rm -f custload.db custload.db-wal custload.db-shm report.json
    {
        case $pipeline in
            csv) printf 'external_id,full_name\nH-1,Ann\nH-2,' ;;
            nd) printf '{"external_id":"H-1","full_name":"Ann"}\n{"external_id":"H-2","full_name":"' ;;
            body) printf '{"customers":[{"external_id":"H-1","full_name":"Ann"},{"external_id":"H-2","full_name":"' ;;
        esac
        head -c "$SIZE" /dev/zero | tr '\0' x
        case $pipeline in
            csv) printf '\nH-3,Cy\n' ;;
            nd) printf '"}\n{"external_id":"H-3","full_name":"Cy"}\n' ;;
            body) printf '"},{"external_id":"H-3","full_name":"Cy"}]}' ;;
        esac
    } | /usr/bin/time -f '%e %M' -o time.txt "$BIN" run "$pipeline" - --quiet --report report.json 2>/dev/null \
        || true
    read -r seconds peak_kib < <(tail -n 1 time.txt)
    added=$(grep -o '"added":[0-9]*' report.json | tail -1 | cut -d: -f2)
    rejected=$(grep -o '"rejected":[0-9]*' report.json | head -1 | cut -d: -f2)
    oversized=$(grep -c 'larger than max_record_bytes' report.json || true)
    verdict=ok
    if [ "$added" != 2 ] || [ "$rejected" != 1 ] || [ "$oversized" = 0 ] \
        || [ "$peak_kib" -gt $((256 * 1024)) ]; then
        verdict=FAIL
        status=1
    fi
    printf '%-6s %s-byte field: %s s, peak RSS %s MiB, added %s, rejected %s: %s\n' \
        "$pipeline" "$SIZE" "$seconds" $((peak_kib / 1024)) "$added" "$rejected" "$verdict"
done
exit $status
