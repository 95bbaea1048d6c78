#!/usr/bin/env bash
# Whole-process benchmark of custload against plain sqlite3 / psql references.
#
#   bench/run.sh [N]            N rows per file (default 1000000)
#
# Environment (all optional):
#   N=1000000         rows per generated file (the first argument wins)
#   R=3               repetitions; walls are medians, peak RSS is the maximum over repetitions
#   WORK=/tmp/custload-bench   work dir: data files (reused between runs), dbs, logs, results.md
#   BENCH_10N=0       1 = also measure peak RSS of a 10xN verify-only run streamed through stdin
#   R_10N=1           repetitions of that 10xN step
#   SKIP_PG=0         1 = leave out every PostgreSQL step
#   SKIP_BUILD=0      1 = do not run cargo build (use target/release as it is)
#   CUSTLOAD_BIN, GEN_BIN, CHECK_BIN   use these binaries instead of target/release/...
#   STAGE_ROWS=100000 rows the check stage alone is measured on (examples/check_threads); 0 = skip
#   PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres PG_DB=test   (trust auth or PGPASSWORD)
#   MEM_LIMIT_MB=150  peak RSS target (MiB)
#   STRICT=0          1 = exit 1 when a target fails
#
# Every timed command runs under `/usr/bin/time -f '%e %M %U %S'`; only that one process (and the
# children it waits for) is measured: the PostgreSQL server's own CPU/memory is not in the RSS
# column of psql or custload. Steps are interleaved per repetition (reference, then custload) so
# background load hits both sides alike. Results: stdout and $WORK/results.md.
set -euo pipefail

die() { echo "bench: error: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-${N:-1000000}}
R=${R:-3}
WORK=${WORK:-/tmp/custload-bench}
BENCH_10N=${BENCH_10N:-0}
R_10N=${R_10N:-1}
SKIP_PG=${SKIP_PG:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
MEM_LIMIT_MB=${MEM_LIMIT_MB:-150}
STAGE_ROWS=${STAGE_ROWS:-100000}
STRICT=${STRICT:-0}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
PG_DB=${PG_DB:-test}

[[ $N =~ ^[0-9]+$ && $N -ge 2 ]] || die "N must be an integer >= 2 (got '$N')"
[[ $R =~ ^[0-9]+$ && $R -ge 1 ]] || die "R must be an integer >= 1 (got '$R')"
[[ $R_10N =~ ^[0-9]+$ && $R_10N -ge 1 ]] || die "R_10N must be an integer >= 1"
[[ $WORK == /* ]] || WORK=$(pwd)/$WORK
[[ $WORK != *"'"* && $WORK != *'"'* && $WORK != *' '* ]] || die "WORK must not contain quotes or spaces"

# ---------------------------------------------------------------- tools
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed or not on PATH${2:+ ($2)}"; }
need sqlite3 "apt-get install sqlite3"
need awk; need sort; need sed; need head; need sha256sum
# Early custload builds replaced a device given as --report by a regular file (temp + rename);
# this script never passes one, but refuses to run on a /dev/null some other run broke.
[[ -c /dev/null ]] || die "/dev/null is not a character device (restore: rm /dev/null; mknod -m 666 /dev/null c 1 3)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is missing (apt-get install time)"
/usr/bin/time -f '%e %M' -o /dev/null "$BASH" -c : 2>/dev/null || die "/usr/bin/time is not GNU time (no -f/-o)"
if [[ $SKIP_PG != 1 ]]; then
    need psql "apt-get install postgresql-client, or SKIP_PG=1"
    export PGHOST=$PG_HOST PGPORT=$PG_PORT PGUSER=$PG_USER PGDATABASE=$PG_DB
    psql -XAtqc 'select 1' >/dev/null 2>&1 \
        || die "cannot connect to PostgreSQL at $PG_USER@$PG_HOST:$PG_PORT/$PG_DB (or set SKIP_PG=1)"
fi
sqlite3 :memory: "select unixepoch('2000-01-01')" >/dev/null 2>&1 \
    || die "sqlite3 CLI too old: needs unixepoch() (3.38+)"

# ---------------------------------------------------------------- binaries
if [[ -z ${CUSTLOAD_BIN:-} || -z ${GEN_BIN:-} || -z ${CHECK_BIN:-} ]]; then
    if [[ $SKIP_BUILD != 1 ]]; then
        need cargo
        log "building (cargo build --release --bin custload --example gen_customers --example check_threads)"
        (cd "$REPO" && cargo build --release --bin custload --example gen_customers --example check_threads) \
            || die "cargo build failed"
    fi
fi
CUSTLOAD_SRC=${CUSTLOAD_BIN:-$REPO/target/release/custload}
GEN_SRC=${GEN_BIN:-$REPO/target/release/examples/gen_customers}
CHECK_SRC=${CHECK_BIN:-$REPO/target/release/examples/check_threads}
[[ -x $CUSTLOAD_SRC ]] || die "custload binary not found: $CUSTLOAD_SRC"
[[ -x $GEN_SRC ]] || die "gen_customers binary not found: $GEN_SRC"
[[ $STAGE_ROWS == 0 || -x $CHECK_SRC ]] || die "check_threads binary not found: $CHECK_SRC (or STAGE_ROWS=0)"

mkdir -p "$WORK"/{bin,data,db,logs,sql,times,tmp}
# Private copies: a concurrent `cargo build` must not swap the binary in the middle of the run.
cp -f "$CUSTLOAD_SRC" "$WORK/bin/custload"
cp -f "$GEN_SRC" "$WORK/bin/gen_customers"
[[ $STAGE_ROWS == 0 ]] || cp -f "$CHECK_SRC" "$WORK/bin/check_threads"
CUSTLOAD=$WORK/bin/custload
GEN=$WORK/bin/gen_customers
rm -f "$WORK"/times/* "$WORK"/logs/* "$WORK"/sql/* "$WORK"/tmp/*
printf '# written by bench/run.sh\n[pipelines.bench]\n' >"$WORK/pipelines.toml"
cd "$WORK"

# ---------------------------------------------------------------- PostgreSQL schemas
PG_PREFIX="custload_bench_$$"
PG_SCHEMAS=()
pg_url() { echo "postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB?options=-c%20search_path%3D$1"; }
pg_new_schema() { # NAME: fresh, empty schema (dropped on exit)
    psql -XAtq -v ON_ERROR_STOP=1 -c "DROP SCHEMA IF EXISTS $1 CASCADE; CREATE SCHEMA $1" >/dev/null 2>&1 \
        || die "could not create schema $1"
    PG_SCHEMAS+=("$1")
}
pg_drop_schema() { psql -XAtq -c "DROP SCHEMA IF EXISTS $1 CASCADE" >/dev/null 2>&1 || true; }
cleanup() {
    local s
    if [[ $SKIP_PG != 1 ]]; then
        for s in "${PG_SCHEMAS[@]+"${PG_SCHEMAS[@]}"}"; do pg_drop_schema "$s"; done
    fi
    rm -f "$WORK"/db/*.db "$WORK"/db/*.db-wal "$WORK"/db/*.db-shm "$WORK"/db/*.db-journal
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- data
START2=$((N / 2))
N10=$((N * 10))
GEN_HASH=$(sha256sum "$REPO/examples/gen_customers.rs" 2>/dev/null | cut -c1-12 || echo nosrc)
NIGHT1=$WORK/data/night1-$N-$GEN_HASH.csv
NIGHT2=$WORK/data/night2-$N-$GEN_HASH.csv
gen_file() { # OUT ARGS...: generate once; reuse when present
    local out=$1; shift
    if [[ -s $out ]]; then log "reusing $out"; return; fi
    log "generating $out"
    "$GEN" "$@" --out "$out.tmp" || die "gen_customers $* failed"
    mv "$out.tmp" "$out"
}
gen_file "$NIGHT1" --rows "$N"
gen_file "$NIGHT2" --rows "$N" --start "$START2" --version 1 --change-rate 1
[[ $(wc -l <"$NIGHT1") -eq $((N + 1)) ]] || die "$NIGHT1 does not have N+1 lines"

# ---------------------------------------------------------------- schema knowledge
# The reference tables get the CSV's own columns, typed as in custload's customers table.
SCRATCH=$WORK/db/scratch.db
rm -f "$SCRATCH"*
"$CUSTLOAD" migrate --config "$WORK/pipelines.toml" --database "sqlite://$SCRATCH" >/dev/null \
    || die "custload migrate (sqlite) failed"
IFS=, read -r -a CSV_COLS <"$NIGHT1"
declare -A COL_TYPE
while IFS='|' read -r name type; do COL_TYPE[$name]=$type; done \
    < <(sqlite3 "$SCRATCH" "select name, upper(type) from pragma_table_info('customers')")
rm -f "$SCRATCH"*
for c in "${CSV_COLS[@]}"; do
    [[ -n ${COL_TYPE[$c]:-} ]] || die "CSV column '$c' is not a column of customers"
done
# Columns custload converts on the way in; everything else is copied as is ('' -> NULL).
sqlite_expr() {
    case $1 in
        birth_date) echo "unixepoch(NULLIF(s.\"birth_date\",''))" ;;
        nationality_codes | domicile_codes) echo "CASE WHEN s.\"$1\" = '' THEN NULL ELSE json_array(s.\"$1\") END" ;;
        *) echo "NULLIF(s.\"$1\",'')" ;;
    esac
}
pg_expr() {
    case $1 in
        birth_date) echo "extract(epoch FROM s.\"birth_date\"::date)::bigint" ;;
        nationality_codes | domicile_codes) echo "CASE WHEN s.\"$1\" IS NULL THEN NULL ELSE json_build_array(s.\"$1\")::text END" ;;
        *) if [[ ${COL_TYPE[$1]} == INTEGER ]]; then echo "s.\"$1\"::bigint"; else echo "s.\"$1\""; fi ;;
    esac
}
join() { local IFS=$1; shift; echo "$*"; }
q_cols=(); typed_sqlite=(); typed_pg=(); text_cols=(); sel_sqlite=(); sel_pg=(); set_cols=(); diff_sqlite=()
for c in "${CSV_COLS[@]}"; do
    q_cols+=("\"$c\"")
    text_cols+=("\"$c\" TEXT")
    if [[ $c == external_id ]]; then
        typed_sqlite+=("\"$c\" TEXT NOT NULL UNIQUE"); typed_pg+=("\"$c\" TEXT NOT NULL UNIQUE")
    else
        typed_sqlite+=("\"$c\" ${COL_TYPE[$c]}")
        case $c in
            birth_date) typed_pg+=("\"$c\" DATE") ;;
            *) if [[ ${COL_TYPE[$c]} == INTEGER ]]; then typed_pg+=("\"$c\" BIGINT"); else typed_pg+=("\"$c\" TEXT"); fi ;;
        esac
        set_cols+=("\"$c\" = excluded.\"$c\"")
        diff_sqlite+=("customers.\"$c\" IS NOT excluded.\"$c\"")
    fi
    sel_sqlite+=("$(sqlite_expr "$c")")
    sel_pg+=("$(pg_expr "$c")")
done
INS_COLS="$(join , "${q_cols[@]}"), email_key, created_time, updated_time"
diff_sqlite+=("customers.email_key IS NOT excluded.email_key")
set_cols+=("email_key = excluded.email_key" "updated_time = excluded.updated_time")
pg_old=(); pg_new=()
for c in "${CSV_COLS[@]}" email_key; do
    [[ $c == external_id ]] && continue
    pg_old+=("customers.\"$c\""); pg_new+=("excluded.\"$c\"")
done

# (a) sqlite3 .import into a fresh table with the CSV's columns + UNIQUE(external_id), one transaction
cat >"$WORK/sql/create_import_sqlite.sql" <<EOF
CREATE TABLE csv_import ($(join , "${typed_sqlite[@]}"));
EOF
# (a2) the same, plus the second unique index custload's table keeps: the lower-cased email
# (context only: what that index costs SQLite itself, in one transaction)
cat >"$WORK/sql/create_import_sqlite_email.sql" <<EOF
CREATE TABLE csv_import ($(join , "${typed_sqlite[@]}"));
CREATE UNIQUE INDEX csv_import_email_key ON csv_import (lower(email)) WHERE email <> '';
EOF
ref_a_sql() { # FILE
    cat <<EOF
.bail on
PRAGMA synchronous = NORMAL;
BEGIN;
.import --csv --skip 1 $1 csv_import
COMMIT;
EOF
}
# (b) .import into a temp table + one INSERT ... SELECT ... ON CONFLICT DO UPDATE into customers
ref_b_sql() { # FILE
    cat <<EOF
.bail on
PRAGMA synchronous = NORMAL;
BEGIN;
CREATE TEMP TABLE stage ($(join , "${text_cols[@]}"));
.import --csv --skip 1 --schema temp $1 stage
INSERT INTO customers ($INS_COLS)
SELECT $(join , "${sel_sqlite[@]}"), lower(NULLIF(s."email",'')), unixepoch(), unixepoch()
FROM temp.stage AS s WHERE true
ON CONFLICT (external_id) DO UPDATE SET $(join , "${set_cols[@]}")
WHERE $(printf '%s OR ' "${diff_sqlite[@]}" | sed 's/ OR $//');
DROP TABLE temp.stage;
COMMIT;
EOF
}
ref_a_sql "$NIGHT1" >"$WORK/sql/ref_a.sql"
ref_b_sql "$NIGHT1" >"$WORK/sql/ref_b_night1.sql"
ref_b_sql "$NIGHT2" >"$WORK/sql/ref_b_night2.sql"
# (c) psql \copy into an empty table with the CSV's columns + unique index
cat >"$WORK/sql/create_import_pg.sql" <<EOF
CREATE TABLE csv_import ($(join , "${typed_pg[@]}"));
EOF
cat >"$WORK/sql/ref_c.sql" <<EOF
\\copy csv_import FROM '$NIGHT1' WITH (FORMAT csv, HEADER true)
EOF
# (d) \copy into an UNLOGGED staging table + one INSERT ... SELECT ... ON CONFLICT DO UPDATE
cat >"$WORK/sql/ref_d.sql" <<EOF
BEGIN;
CREATE UNLOGGED TABLE stage ($(join , "${text_cols[@]}"));
\\copy stage FROM '$NIGHT1' WITH (FORMAT csv, HEADER true)
INSERT INTO customers ($INS_COLS)
SELECT $(join , "${sel_pg[@]}"), lower(s."email"), extract(epoch FROM now())::bigint, extract(epoch FROM now())::bigint
FROM stage AS s
ON CONFLICT (external_id) DO UPDATE SET $(join , "${set_cols[@]}")
WHERE ($(join , "${pg_old[@]}")) IS DISTINCT FROM ($(join , "${pg_new[@]}"));
DROP TABLE stage;
COMMIT;
EOF

# ---------------------------------------------------------------- measuring
rep=0
# stdout of every timed command is discarded: custload runs with `--report -`, so its JSON report
# (one entry per row, ~57 bytes a row) is serialized as usual but not stored.
# Each line of times/KEY: wall (s), peak RSS (KiB), user CPU (s), system CPU (s). The CPU shows
# whether a step was bound by it: user + system near twice the wall means both cores were busy.
settle() { # before each timed step: write out the dirty pages the steps before it left (a 1M
    # `.import` leaves hundreds of MB), so that no step pays for another's writeback
    sync
}
measure() { # KEY CMD...: time CMD, append "wall_s peak_kb user_s sys_s" to times/KEY
    local key=$1; shift
    local base=$WORK/logs/$key.$rep
    settle
    if ! /usr/bin/time -f '%e %M %U %S' -o "$WORK/tmp/time" "$@" >/dev/null 2>"$base.err"; then
        echo "bench: error: step '$key' (repetition $rep) failed: $*" >&2
        tail -n 20 "$base.err" >&2
        exit 1
    fi
    tail -n 1 "$WORK/tmp/time" >>"$WORK/times/$key"
}
measure_stdin() { # KEY ROWS CUSTLOAD-ARGS...: gen_customers --rows ROWS | time custload ARGS
    local key=$1 rows=$2; shift 2
    local base=$WORK/logs/$key.$rep
    settle
    if ! "$GEN" --rows "$rows" 2>"$base.gen.err" \
        | /usr/bin/time -f '%e %M %U %S' -o "$WORK/tmp/time" "$CUSTLOAD" "$@" >/dev/null 2>"$base.err"; then
        echo "bench: error: step '$key' (repetition $rep) failed: gen_customers --rows $rows | custload $*" >&2
        tail -n 20 "$base.err" "$base.gen.err" >&2
        exit 1
    fi
    tail -n 1 "$WORK/tmp/time" >>"$WORK/times/$key"
}
custload_run() { # KEY DB-URL FILE EXTRA-ARGS...
    local key=$1 url=$2 file=$3; shift 3
    measure "$key" "$CUSTLOAD" run bench "$file" -q --report - \
        --config "$WORK/pipelines.toml" --database "$url" "$@"
}
fresh_db() { rm -f "$1" "$1-wal" "$1-shm" "$1-journal"; }
copy_db() { # SRC DST
    fresh_db "$2"
    cp "$1" "$2"
    if [[ -e $1-wal ]]; then cp "$1-wal" "$2-wal"; fi
}
migrated_db() { # PATH: fresh db with custload's schema
    fresh_db "$1"
    "$CUSTLOAD" migrate --config "$WORK/pipelines.toml" --database "sqlite://$1" >/dev/null \
        || die "custload migrate --database sqlite://$1 failed"
}
checkpoint() { # flush dirty PG pages so one step's writes do not slow the next
    psql -XAtq -c 'CHECKPOINT' >/dev/null 2>&1 || true
}
SANITY=()
expect() { # WHAT GOT WANT
    if [[ $2 != "$3" ]]; then
        SANITY+=("- WARNING: $1: got $2, expected $3")
        log "WARNING: $1: got $2, expected $3"
    fi
}
last_run() { sqlite3 "$1" "select $2 from import_runs order by id desc limit 1"; }

DB=$WORK/db
BASE=$DB/base.db   # custload's first load of night 1: the starting point of re-run and night 2
for ((rep = 1; rep <= R; rep++)); do
    log "repetition $rep/$R (N=$N)"

    # 1. first load: sqlite3 .import reference (a), then custload into an empty db
    migrated_db "$DB/ref_a.db"
    sqlite3 -bail "$DB/ref_a.db" <"$WORK/sql/create_import_sqlite.sql"
    measure ref_a_sqlite_import sqlite3 -bail -batch -init /dev/null "$DB/ref_a.db" ".read $WORK/sql/ref_a.sql"
    expect "ref (a) rows" "$(sqlite3 "$DB/ref_a.db" 'select count(*) from csv_import')" "$N"
    fresh_db "$DB/ref_a.db"

    migrated_db "$DB/ref_a2.db"
    sqlite3 -bail "$DB/ref_a2.db" <"$WORK/sql/create_import_sqlite_email.sql"
    measure ref_a2_sqlite_import_email sqlite3 -bail -batch -init /dev/null "$DB/ref_a2.db" ".read $WORK/sql/ref_a.sql"
    expect "ref (a2) rows" "$(sqlite3 "$DB/ref_a2.db" 'select count(*) from csv_import')" "$N"
    fresh_db "$DB/ref_a2.db"

    fresh_db "$DB/first.db"
    custload_run cl_first_load "sqlite://$DB/first.db" "$NIGHT1"
    expect "first load rows" "$(sqlite3 "$DB/first.db" 'select count(*) from customers')" "$N"
    expect "first load added/rejected" "$(last_run "$DB/first.db" "added||'/'||rejected")" "$N/0"
    fresh_db "$BASE"; sqlite3 "$DB/first.db" ".backup $BASE"; fresh_db "$DB/first.db"

    # reference (b) on an empty db (context only: SQL-only upsert of night 1)
    migrated_db "$DB/ref_b1.db"
    measure ref_b_sql_upsert_night1 sqlite3 -bail -batch -init /dev/null "$DB/ref_b1.db" ".read $WORK/sql/ref_b_night1.sql"
    expect "ref (b) night 1 rows" "$(sqlite3 "$DB/ref_b1.db" 'select count(*) from customers')" "$N"
    fresh_db "$DB/ref_b1.db"

    # 2. re-run of the same file on top of the first load (all unchanged)
    copy_db "$BASE" "$DB/rerun.db"
    custload_run cl_rerun "sqlite://$DB/rerun.db" "$NIGHT1"
    expect "re-run unchanged" "$(last_run "$DB/rerun.db" "unchanged")" "$N"
    fresh_db "$DB/rerun.db"

    # 3. next night's file (half changed, half new): SQL-only upsert (b) vs custload, same start
    copy_db "$BASE" "$DB/ref_b2.db"
    measure ref_b_sql_upsert_night2 sqlite3 -bail -batch -init /dev/null "$DB/ref_b2.db" ".read $WORK/sql/ref_b_night2.sql"
    expect "ref (b) night 2 rows" "$(sqlite3 "$DB/ref_b2.db" 'select count(*) from customers')" "$((START2 + N))"
    fresh_db "$DB/ref_b2.db"

    copy_db "$BASE" "$DB/night2.db"
    custload_run cl_night2 "sqlite://$DB/night2.db" "$NIGHT2"
    expect "night 2 rows" "$(sqlite3 "$DB/night2.db" 'select count(*) from customers')" "$((START2 + N))"
    expect "night 2 added/updated" "$(last_run "$DB/night2.db" "added||'/'||updated")" "$START2/$((N - START2))"
    fresh_db "$DB/night2.db"

    # 4. verify-only against an empty db; --threads 1 vs --threads 2
    fresh_db "$DB/verify.db"
    custload_run cl_verify_only "sqlite://$DB/verify.db" "$NIGHT1" --verify-only
    fresh_db "$DB/verify.db"
    custload_run cl_verify_threads1 "sqlite://$DB/verify.db" "$NIGHT1" --verify-only --threads 1
    fresh_db "$DB/verify.db"
    custload_run cl_verify_threads2 "sqlite://$DB/verify.db" "$NIGHT1" --verify-only --threads 2
    fresh_db "$DB/verify.db"

    # 5. peak memory, N rows streamed through stdin
    measure_stdin cl_stdin_verify_n "$N" run bench - --format csv --verify-only -q --report - \
        --config "$WORK/pipelines.toml" --database "sqlite://$DB/verify.db"
    fresh_db "$DB/verify.db"

    # 6. PostgreSQL
    if [[ $SKIP_PG != 1 ]]; then
        s="${PG_PREFIX}_c$rep"; pg_new_schema "$s"
        PGOPTIONS="-c search_path=$s" psql -XAtq -v ON_ERROR_STOP=1 -f "$WORK/sql/create_import_pg.sql" >/dev/null
        checkpoint
        measure ref_c_pg_copy env PGOPTIONS="-c search_path=$s" psql -X -q -v ON_ERROR_STOP=1 -f "$WORK/sql/ref_c.sql"
        expect "ref (c) rows" "$(psql -XAtqc "select count(*) from $s.csv_import")" "$N"
        pg_drop_schema "$s"

        s="${PG_PREFIX}_d$rep"; pg_new_schema "$s"
        "$CUSTLOAD" migrate --config "$WORK/pipelines.toml" --database "$(pg_url "$s")" >/dev/null \
            || die "custload migrate (postgres, schema $s) failed"
        checkpoint
        measure ref_d_pg_copy_merge env PGOPTIONS="-c search_path=$s" psql -X -q -v ON_ERROR_STOP=1 -f "$WORK/sql/ref_d.sql"
        expect "ref (d) rows" "$(psql -XAtqc "select count(*) from $s.customers")" "$N"
        pg_drop_schema "$s"

        s="${PG_PREFIX}_cl$rep"; pg_new_schema "$s"
        checkpoint
        custload_run cl_pg_first_load "$(pg_url "$s")" "$NIGHT1"
        expect "PG first load rows" "$(psql -XAtqc "select count(*) from $s.customers")" "$N"
        pg_drop_schema "$s"
    fi
done

if [[ $BENCH_10N == 1 ]]; then
    for ((rep = 1; rep <= R_10N; rep++)); do
        log "10xN memory step $rep/$R_10N ($N10 rows through stdin, verify-only)"
        fresh_db "$DB/verify.db"
        measure_stdin cl_stdin_verify_10n "$N10" run bench - --format csv --verify-only -q --report - \
            --config "$WORK/pipelines.toml" --database "sqlite://$DB/verify.db"
        fresh_db "$DB/verify.db"
    done
fi

# The check stage alone, on one thread and on two, taking turns (examples/check_threads.rs): a
# whole run with --threads 1 already keeps both cores busy with its reader and writer.
STAGE_RATIO= STAGE_PASSES=
if [[ $STAGE_ROWS != 0 ]]; then
    log "check stage alone, 1 vs 2 threads ($STAGE_ROWS rows)"
    "$WORK/bin/check_threads" "$NIGHT1" --rows "$STAGE_ROWS" --passes 7 >"$WORK/logs/check_threads.log" 2>&1 \
        || die "check_threads failed (see $WORK/logs/check_threads.log)"
    STAGE_RATIO=$(awk '/^median ratio/ {print $3}' "$WORK/logs/check_threads.log")
    STAGE_PASSES=$(awk '/^pass / { printf "%s%s", (n++ ? ", " : ""), $NF }' "$WORK/logs/check_threads.log")
fi

[[ -c /dev/null ]] || SANITY+=("- WARNING: /dev/null is no longer a character device (something replaced it during the run)")

# ---------------------------------------------------------------- report
median_of() { # KEY AWK-EXPR -> median over the repetitions of AWK-EXPR (of one times/KEY line)
    awk "{print $2}" "$WORK/times/$1" | sort -g | awk '{v[NR]=$1} END {
        if (NR == 0) exit 1
        if (NR % 2) printf "%.3f", v[(NR+1)/2]; else printf "%.3f", (v[NR/2]+v[NR/2+1])/2 }'
}
median_wall() { median_of "$1" '$1'; }  # KEY -> median wall seconds
median_cpu() { median_of "$1" '$3 + $4'; }  # KEY -> median user + system seconds
max_rss_mb() { awk 'BEGIN{m=0} $2>m{m=$2} END{printf "%.1f", m/1024}' "$WORK/times/$1"; }
have() { [[ -s $WORK/times/$1 ]]; }

MD=$WORK/results.md
rows_md=()
row() { # KEY LABEL ROWS
    have "$1" || return 0
    local w cpu rss rps
    w=$(median_wall "$1"); cpu=$(median_cpu "$1"); rss=$(max_rss_mb "$1")
    rps=$(awk -v n="$3" -v w="$w" 'BEGIN{ if (w > 0) printf "%.0f", n/w; else print "-" }')
    rows_md+=("| $2 | $3 | $w | $cpu | $rps | $rss |")
}
row ref_a_sqlite_import "(a) sqlite3 \`.import\` into fresh table + UNIQUE(external_id), 1 txn" "$N"
row ref_a2_sqlite_import_email "(a2) same as (a) + UNIQUE index on lower(email), as custload's table has (info)" "$N"
row ref_b_sql_upsert_night1 "(b) sqlite3 \`.import\` temp + INSERT…SELECT…ON CONFLICT, empty db (info)" "$N"
row ref_b_sql_upsert_night2 "(b) same, night-2 file on top of night 1" "$N"
row ref_c_pg_copy "(c) psql \`\\copy\` into empty table + unique index" "$N"
row ref_d_pg_copy_merge "(d) psql \`\\copy\` UNLOGGED staging + INSERT…SELECT…ON CONFLICT" "$N"
row cl_first_load "custload first load, empty SQLite db" "$N"
row cl_rerun "custload re-run same file (all unchanged)" "$N"
row cl_night2 "custload next night (half changed, half new)" "$N"
row cl_verify_only "custload --verify-only, empty db" "$N"
row cl_verify_threads1 "custload --verify-only --threads 1" "$N"
row cl_verify_threads2 "custload --verify-only --threads 2" "$N"
row cl_pg_first_load "custload PostgreSQL first load, fresh schema" "$N"
row cl_stdin_verify_n "custload --verify-only, stdin from gen_customers" "$N"
row cl_stdin_verify_10n "custload --verify-only, stdin from gen_customers (10×N)" "$N10"

targets_md=()
FAILS=0
# The ratio of each repetition's two walls, in order ("1.021, 0.934, ..."): steps of one
# repetition run minutes apart at most, so these show how far the host's changing speed moves a
# ratio that the verdict takes from the medians.
per_repetition() { # NUM-KEY DEN-KEY
    paste -d' ' <(awk '{print $1}' "$WORK/times/$1") <(awk '{print $1}' "$WORK/times/$2") |
        awk '$2 > 0 { printf "%s%.3f", (n++ ? ", " : ""), $1 / $2 } END { if (!n) printf "-" }'
}
ratio_target() { # LABEL NUM-KEY DEN-KEY OP LIMIT   (ratio of median walls)
    local label=$1 num=$2 den=$3 op=$4 limit=$5 r verdict
    if ! have "$num" || ! have "$den"; then targets_md+=("| $label | - | $op $limit | SKIPPED | - |"); return; fi
    r=$(awk -v a="$(median_wall "$num")" -v b="$(median_wall "$den")" 'BEGIN{ if (b > 0) printf "%.3f", a/b; else print "inf" }')
    verdict=$(awk -v r="$r" -v l="$limit" -v op="$op" 'BEGIN{ if (r == "inf") { print "FAIL"; exit }
        ok = (op == "≤") ? (r + 0 <= l + 0) : (r + 0 >= l + 0); print ok ? "PASS" : "FAIL" }')
    [[ $verdict == FAIL ]] && FAILS=$((FAILS + 1))
    targets_md+=("| $label | $r | $op $limit | $verdict | $(per_repetition "$num" "$den") |")
}
mem_target() { # LABEL KEY
    local label=$1 key=$2 mb verdict
    if ! have "$key"; then targets_md+=("| $label | - | ≤ $MEM_LIMIT_MB MiB | SKIPPED | - |"); return; fi
    mb=$(max_rss_mb "$key")
    verdict=$(awk -v m="$mb" -v l="$MEM_LIMIT_MB" 'BEGIN{ print (m + 0 <= l + 0) ? "PASS" : "FAIL" }')
    [[ $verdict == FAIL ]] && FAILS=$((FAILS + 1))
    targets_md+=("| $label | $mb MiB | ≤ $MEM_LIMIT_MB MiB | $verdict | $(awk '{printf "%s%.1f", (n++ ? ", " : ""), $2 / 1024}' "$WORK/times/$key") MiB |")
}
ratio_target "first load / sqlite3 \`.import\` (a)" cl_first_load ref_a_sqlite_import "≤" 0.8
ratio_target "re-run / custload first load" cl_rerun cl_first_load "≤" 0.25
ratio_target "next night / SQL-only upsert (b, night 2)" cl_night2 ref_b_sql_upsert_night2 "≤" 1.0
ratio_target "PG first load / (COPY staging + merge) (d)" cl_pg_first_load ref_d_pg_copy_merge "≤" 1.0
ratio_target "verify-only / sqlite3 \`.import\` (a)" cl_verify_only ref_a_sqlite_import "≤" 0.25
mem_target "peak RSS, N rows via stdin (verify-only)" cl_stdin_verify_n
if [[ $BENCH_10N == 1 ]]; then
    mem_target "peak RSS, 10×N rows via stdin (verify-only)" cl_stdin_verify_10n
else
    targets_md+=("| peak RSS, 10×N rows via stdin (verify-only) | - | ≤ $MEM_LIMIT_MB MiB | SKIPPED (BENCH_10N=1) | - |")
fi
# throughput ratio threads2/threads1 = wall(threads1) / wall(threads2)
ratio_target "throughput --threads 2 / --threads 1 (verify-only)" cl_verify_threads1 cl_verify_threads2 "≥" 1.8
if [[ -n $STAGE_RATIO ]]; then
    verdict=$(awk -v r="$STAGE_RATIO" 'BEGIN{ print (r + 0 >= 1.8) ? "PASS" : "FAIL" }')
    [[ $verdict == FAIL ]] && FAILS=$((FAILS + 1))
    targets_md+=("| throughput, check stage alone, 2 threads / 1 (median of 7 passes, $STAGE_ROWS rows) | $STAGE_RATIO | ≥ 1.8 | $verdict | ${STAGE_PASSES:--} |")
fi
info_md=()
if have cl_pg_first_load && have ref_c_pg_copy; then
    info_md+=("- PG first load / plain \`\\copy\` (c): $(awk -v a="$(median_wall cl_pg_first_load)" -v b="$(median_wall ref_c_pg_copy)" 'BEGIN{printf "%.3f", a/b}') (no target)")
fi
if have cl_first_load && have ref_a2_sqlite_import_email; then
    info_md+=("- first load / \`.import\` with the email index too (a2): $(awk -v a="$(median_wall cl_first_load)" -v b="$(median_wall ref_a2_sqlite_import_email)" 'BEGIN{printf "%.3f", a/b}') (no target)")
fi
if have cl_first_load && have ref_b_sql_upsert_night1; then
    info_md+=("- first load / SQL-only upsert into empty db (b, night 1): $(awk -v a="$(median_wall cl_first_load)" -v b="$(median_wall ref_b_sql_upsert_night1)" 'BEGIN{printf "%.3f", a/b}') (no target)")
fi
if have cl_first_load; then
    info_md+=("- peak RSS of the file-based first load: $(max_rss_mb cl_first_load) MiB (no target)")
fi

REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$REPO" status --porcelain 2>/dev/null | head -n 1) ]] && REV="$REV (dirty tree)"
{
    echo "## custload benchmark"
    echo
    echo "N = $N rows per file ($(du -h "$NIGHT1" | cut -f1) CSV), R = $R repetitions (median wall and CPU; peak RSS = max over repetitions)."
    echo "custload $REV; $(nproc) cores, load average at end $(cut -d' ' -f1-3 /proc/loadavg);"
    echo "sqlite3 $(sqlite3 --version | cut -d' ' -f1)$([[ $SKIP_PG != 1 ]] && echo "; $(psql -XAtqc 'show server_version' 2>/dev/null | sed 's/^/PostgreSQL /')"); $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    echo "| Measurement | rows | median wall (s) | median CPU, user + sys (s) | rows/s | peak RSS (MiB) |"
    echo "|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows_md[@]}"
    echo
    echo "| Target | measured | limit | result | per repetition |"
    echo "|---|---:|---:|---|---|"
    printf '%s\n' "${targets_md[@]}"
    if ((${#info_md[@]})); then echo; printf '%s\n' "${info_md[@]}"; fi
    if ((${#SANITY[@]})); then echo; echo "Sanity checks:"; printf '%s\n' "${SANITY[@]}"; fi
    echo
    echo "References use the same SQLite pragmas as custload (WAL, synchronous=NORMAL). The RSS of psql"
    echo "and custload-on-PostgreSQL excludes the server. Ratios are of median walls; the threads"
    echo "ratio is throughput (wall --threads 1 / wall --threads 2). \"per repetition\" gives each"
    echo "repetition's own ratio (or peak, or each pass of the check stage); the verdict is of the medians."
} >"$MD"

echo
cat "$MD"
echo
log "results written to $MD (raw times in $WORK/times, logs in $WORK/logs)"
if [[ $STRICT == 1 && $FAILS -gt 0 ]]; then exit 1; fi
exit 0
