#!/usr/bin/env bash
# Make sure the Dovecot IMAP server is installed, for the tests' throwaway IMAP service.
# Idempotent and quiet: returns at once when dovecot is already installed; apt output is shown
# only when the installation fails.
set -euo pipefail

if command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-dovecot: dovecot is missing; installing dovecot-imapd needs root" >&2
    exit 1
fi

apt_log="$(mktemp)"
trap 'rm -f "$apt_log"' EXIT
export DEBIAN_FRONTEND=noninteractive
echo "ensure-dovecot: installing dovecot-imapd" >&2
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends dovecot-imapd; } \
    >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "ensure-dovecot: apt-get install dovecot-imapd failed" >&2
    exit 1
fi

if ! [ -x /usr/sbin/dovecot ]; then
    echo "ensure-dovecot: dovecot-imapd installed but /usr/sbin/dovecot is missing" >&2
    exit 1
fi
