# Shared helpers for scripts/services, scripts/test and scripts/demo.
# Source it; it defines functions and the variables ROOT, VENV, STATE_DIR, ENV_FILE.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
# shellcheck disable=SC2034  # used by the scripts that source this file
STATE_DIR="$ROOT/.services"
# shellcheck disable=SC2034
ENV_FILE="$ROOT/.services.env"

log() { printf '[%s] %s\n' "${LOG_PREFIX:-sqla-audit}" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# classpath_jar FILE GLOB: the first entry of the ':'-separated classpath in FILE whose file
# name matches GLOB (e.g. 'jamm-*.jar'); status 1 when none does. Read by bash alone: a
# `tr | grep -m1` pipeline breaks its own pipe under pipefail once the classpath is longer
# than one write (tr killed by SIGPIPE after grep found an early entry and exited).
classpath_jar() {
    local file="$1" glob="$2" entry entries=()
    IFS=: read -r -a entries <"$file" || true # Maven writes no final newline
    for entry in "${entries[@]}"; do
        # shellcheck disable=SC2053  # the glob is meant to match
        if [[ ${entry##*/} == $glob ]]; then
            printf '%s\n' "$entry"
            return 0
        fi
    done
    return 1
}

_APT_UPDATED=0
# ensure_apt_packages PKG...: install the Debian packages that are missing (apt-get update once).
ensure_apt_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
    if ((!_APT_UPDATED)); then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        _APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# The interpreter the virtualenv is made from.
base_python() {
    local py="${PYTHON:-python3}"
    command -v "$py" >/dev/null 2>&1 || die "$py not found (Python >= 3.11 is required)"
    echo "$py"
}

# ensure_venv_exists: create .venv with `python3 -m venv` (installing python3-venv if needed).
ensure_venv_exists() {
    [[ -x $VENV/bin/python ]] && return 0
    local py
    py="$(base_python)"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$py is $("$py" -V 2>&1); Python >= 3.11 is required"
    if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        ensure_apt_packages python3-venv
    fi
    log "creating $VENV"
    "$py" -m venv "$VENV"
}

# ensure_venv EXTRAS: make sure the project is installed (editable) with the given extras,
# e.g. "test,dev", or "" for the bare package. Re-installs only when pyproject.toml changed
# since the last install with these extras (stamp files in .venv).
ensure_venv() {
    local extras="$1" spec="." digest stamp
    [[ -n $extras ]] && spec=".[$extras]"
    ensure_venv_exists
    digest="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    stamp="$VENV/.sqla-audit-installed-${extras:-base}"
    if [[ -f $stamp && "$(<"$stamp")" == "$digest" ]]; then
        return 0
    fi
    if [[ -z $extras ]]; then
        # Any install with extras also installed the bare package.
        local other
        for other in "$VENV"/.sqla-audit-installed-*; do
            [[ -f $other && "$(<"$other")" == "$digest" ]] && return 0
        done
    fi
    log "pip install -e '$spec' (pyproject.toml changed or first install)"
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec") ||
        die "pip install -e '$spec' failed"
    echo "$digest" >"$stamp"
}

# pyproject_requirement NAME: the requirement string for NAME as written in pyproject.toml
# (so the tool versions used by scripts/services stay the ones the project declares).
pyproject_requirement() {
    grep -oE "\"$1[^\"]*\"" "$ROOT/pyproject.toml" | head -n1 | tr -d '"'
}

# ensure_venv_modules "MODULE=REQUIREMENT"...: pip install REQUIREMENT when MODULE cannot be
# imported in .venv. Used by scripts/services, which needs only a couple of tools.
ensure_venv_modules() {
    ensure_venv_exists
    local item module req to_install=()
    for item in "$@"; do
        module="${item%%=*}"
        req="${item#*=}"
        if ! "$VENV/bin/python" -c "import $module" >/dev/null 2>&1; then
            to_install+=("$req")
        fi
    done
    ((${#to_install[@]})) || return 0
    log "pip install ${to_install[*]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${to_install[@]}" ||
        die "pip install ${to_install[*]} failed"
}
