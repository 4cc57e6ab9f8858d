#!/bin/sh
# The test of a search study shared through PostgreSQL needs a PostgreSQL server binary (Debian's
# `postgresql` package). Installed here where that is possible (root with apt-get, as CI runs);
# elsewhere that one test is skipped, with the reason. Never fails the test command itself.
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if apt-get install -y -q postgresql >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; }; then
        echo "tests/postgres.sh: installed Debian's postgresql package" >&2
        exit 0
    fi
fi
echo "tests/postgres.sh: PostgreSQL is not installed; the test of a study shared through PostgreSQL is skipped" >&2
exit 0
