# The `browser` service of scripts/services: Debian's chromium and chromium-driver, for the
# web viewer's browser tests (selenium drives the system chromedriver; nothing is downloaded
# at test time). Nothing runs in the background: `up` installs the packages and records their
# paths in .services.env, `status` reports the installed version, `down` has nothing to stop.
#
# Sourced by scripts/services.
# shellcheck shell=bash

BROWSER_CHROMIUM=/usr/bin/chromium
BROWSER_DRIVER=/usr/bin/chromedriver

browser_packages() {
    [[ -x $BROWSER_CHROMIUM ]] || echo chromium
    [[ -x $BROWSER_DRIVER ]] || echo chromium-driver
}

browser_up() {
    [[ -x $BROWSER_CHROMIUM && -x $BROWSER_DRIVER ]] ||
        die "browser: $BROWSER_CHROMIUM or $BROWSER_DRIVER is missing after the install"
    {
        echo "export SQLA_AUDIT_TEST_CHROMIUM=$BROWSER_CHROMIUM"
        echo "export SQLA_AUDIT_TEST_CHROMEDRIVER=$BROWSER_DRIVER"
    } >"$STATE_DIR/browser/env"
    log "browser: $("$BROWSER_DRIVER" --version 2>/dev/null | head -n1)"
}

browser_down() { :; }

browser_status() {
    if [[ -x $BROWSER_CHROMIUM && -x $BROWSER_DRIVER ]]; then
        echo "installed  $("$BROWSER_DRIVER" --version 2>/dev/null | cut -d' ' -f1-2)  $BROWSER_DRIVER"
    else
        echo "not installed"
        return 1
    fi
}
