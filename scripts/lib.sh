# Shared by scripts/run and scripts/test. Sourced, not executed.

PYTHON=${PYTHON:-python3}

# Create .venv and install the project (with extras "$1", if given); reinstall only when
# pyproject.toml changed since the last install.
ensure_venv() {
    local extras=${1:-}
    local spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    if [ ! -x .venv/bin/python ]; then
        "$PYTHON" -m venv .venv
        .venv/bin/python -m pip install --quiet --upgrade pip
    fi
    local stamp=".venv/.installed-${extras:-base}"
    local digest
    digest=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        echo "==> installing $spec into .venv"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
        echo "$digest" > "$stamp"
    fi
}

wait_for() {  # wait_for <description> <command...>
    local what=$1
    shift
    for _ in $(seq 1 60); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "error: $what did not come up" >&2
    return 1
}

# Start the local PostgreSQL when it is installed but not running.
ensure_postgres() {
    if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
        return 0
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "==> installing PostgreSQL"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
            # Match the CI machine: trust local TCP connections for the test user.
            local hba
            hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
            sed -i 's/^\(host\s\+all\s\+all\s\+127.0.0.1\/32\s\+\)\S\+/\1trust/' "$hba"
        else
            echo "error: PostgreSQL is not running on 127.0.0.1:5432 and cannot be installed here" >&2
            return 1
        fi
    fi
    echo "==> starting PostgreSQL"
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for "PostgreSQL" pg_isready -h 127.0.0.1 -p 5432 -q
}

# Start a local Redis when it is installed but not running.
ensure_redis() {
    if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "==> installing Redis"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
        else
            echo "error: Redis is not running on 127.0.0.1:6379 and cannot be installed here" >&2
            return 1
        fi
    fi
    echo "==> starting Redis"
    mkdir -p /tmp/inkwave-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp/inkwave-redis --logfile /tmp/inkwave-redis/redis.log
    wait_for "Redis" redis-cli -h 127.0.0.1 -p 6379 ping
}

# Debian's Chromium (and a colour emoji font, as operators' browsers have) for the page tests,
# which drive it with Playwright; Playwright never downloads a browser of its own.
ensure_chromium() {
    if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi "emoji"; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing Chromium for the page tests"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji \
            >/dev/null 2>&1 || {
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                chromium fonts-noto-color-emoji >/dev/null
        }
    fi
    if [ ! -x /usr/bin/chromium ]; then
        echo "error: /usr/bin/chromium is missing (apt-get install chromium) for the page tests" >&2
        return 1
    fi
}

# Debian's Prometheus package for its promtool, which checks deploy/prometheus (the config,
# the alert rules and their unit tests) in tests/test_metrics_endpoint.py. The daemon it also
# installs is not used (policy-rc.d or no systemd keeps it from starting in a container).
ensure_promtool() {
    if [ -x /usr/bin/promtool ]; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing promtool (Debian's prometheus package)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
            >/dev/null 2>&1 || {
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends prometheus >/dev/null
        }
    fi
    if [ ! -x /usr/bin/promtool ]; then
        echo "error: /usr/bin/promtool is missing (apt-get install prometheus) for the metrics tests" >&2
        return 1
    fi
}
