#!/usr/bin/env bash
# Side by side: alternating runs of two custload builds on the same file, for one change.
#
#   bench/ab.sh OLD-BIN NEW-BIN FILE.csv [first-load|verify-only|rerun]   (default first-load)
#
# Environment: PAIRS=5 (alternating pairs), WORK=/tmp/custload-ab, EXTRA="" (more `run` args).
# Each run gets a fresh database migrated by its own binary (a re-run first loads the file
# untimed); only `custload run` is timed, under GNU `/usr/bin/time`. Prints one line per run
# (build, wall, user, sys, peak RSS in MiB) and each build's median wall, and checks that both
# builds' reports agree once the run's own times and paths are left out.
set -euo pipefail

die() { echo "ab: error: $*" >&2; exit 1; }
[[ $# -ge 3 ]] || die "usage: bench/ab.sh OLD-BIN NEW-BIN FILE.csv [first-load|verify-only|rerun]"
OLD=$1 NEW=$2 FILE=$3 MODE=${4:-first-load}
PAIRS=${PAIRS:-5}
WORK=${WORK:-/tmp/custload-ab}
[[ -x $OLD && -x $NEW ]] || die "both builds must be executable files"
[[ -r $FILE ]] || die "cannot read $FILE"
[[ $PAIRS =~ ^[1-9][0-9]*$ ]] || die "PAIRS must be a positive integer"
case $MODE in first-load | verify-only | rerun) ;; *) die "unknown mode '$MODE'" ;; esac
[[ -x /usr/bin/time ]] || die "GNU /usr/bin/time is missing (apt-get install time)"

mkdir -p "$WORK"
CONFIG="$WORK/pipelines.toml"
printf '# written by bench/ab.sh\n[pipelines.ab]\n' >"$CONFIG"
TIMES="$WORK/times"
: >"$TIMES"

fresh_db() { rm -f "$1" "$1-wal" "$1-shm" "$1-journal"; }

# one_run NAME BIN: a fresh database, the untimed set-up the mode needs, then the timed run.
one_run() {
    local name=$1 bin=$2 db="$WORK/$1.db" args=()
    fresh_db "$db"
    "$bin" migrate --config "$CONFIG" --database "sqlite://$db" >/dev/null
    [[ $MODE == verify-only ]] && args+=(--verify-only)
    if [[ $MODE == rerun ]]; then
        "$bin" run ab "$FILE" -q --report /dev/null --config "$CONFIG" --database "sqlite://$db" \
            2>/dev/null
    fi
    # The run before this one (and a re-run's first load) left dirty pages; written out here,
    # they do not land on this run's time.
    sync
    # shellcheck disable=SC2086 # EXTRA is a list of words on purpose
    /usr/bin/time -f "$name %e %U %S %M" -a -o "$TIMES" \
        "$bin" run ab "$FILE" -q --report "$WORK/$name.json" --config "$CONFIG" \
        --database "sqlite://$db" "${args[@]}" ${EXTRA:-} 2>/dev/null
    fresh_db "$db"
}

for ((i = 1; i <= PAIRS; i++)); do
    one_run old "$OLD"
    one_run new "$NEW"
done

awk '{printf "%s %6.2f s  user %6.2f  sys %5.2f  %6.1f MiB\n", $1, $2, $3, $4, $5 / 1024}' "$TIMES"
for name in old new; do
    printf '%s median wall: ' "$name"
    awk -v n="$name" '$1 == n {print $2}' "$TIMES" | sort -n | awk '{w[NR] = $1} END {
        if (NR % 2) print w[(NR + 1) / 2]; else print (w[NR / 2] + w[NR / 2 + 1]) / 2 }'
done

# The reports must agree: everything but the run block (ids, times, database path).
strip_run() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("run",None); print(json.dumps(d,sort_keys=True))' "$1"; }
if command -v python3 >/dev/null; then
    if [[ $(strip_run "$WORK/old.json") == "$(strip_run "$WORK/new.json")" ]]; then
        echo "reports: identical apart from the run block"
    else
        echo "reports: DIFFER (see $WORK/old.json and $WORK/new.json)"
        exit 1
    fi
fi
