#!/usr/bin/env bash
# Builds a local stand-in for the `python:3.11-slim` base image, for machines that cannot pull
# from a registry: a debootstrap'ed Debian bookworm (whose python3 is 3.11) imported into
# podman under that tag. Cached: does nothing when the tag already exists (FORCE=1 rebuilds).
#
# The stand-in differs from the real image in two ways the Dockerfile is written to tolerate:
# python is Debian's /usr/bin/python3 (no /usr/local/bin/python, pip refuses system installs
# under PEP 668; the Dockerfile installs into a venv at /opt/venv anyway), and it carries
# this host's extra CA certificates and pip `cert` setting, so pip inside `RUN` reaches PyPI
# through the same TLS-intercepting egress as the host.
#
# Usage: tests/deploy/standin_base.sh [TAG]   (default python:3.11-slim)
# Needs root, debootstrap and podman.
set -euo pipefail

TAG="${1:-python:3.11-slim}"
if [ -z "${FORCE:-}" ] && podman image exists "$TAG"; then
    echo "standin: $TAG exists, reusing it"
    exit 0
fi

mirror() {
    # The first Debian archive URI in the host's apt sources (deb822 or one-line format).
    local uri
    uri=$(grep -hoE '^URIs:[[:space:]]*[^[:space:]]+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | grep -v '\[' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

ROOT=$(mktemp -d /var/tmp/standin-rootfs.XXXXXX)
cleanup() { rm -rf --one-file-system "$ROOT"; }
trap cleanup EXIT

MIRROR="${DEBIAN_MIRROR:-$(mirror)}"
echo "standin: debootstrap bookworm from $MIRROR into $ROOT"
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -n 40 "$ROOT.log"; rm -f "$ROOT.log"; exit 1; }
rm -f "$ROOT.log"

# The host's extra CAs (TLS-intercepting proxies), then the bundle rebuilt inside.
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
    cp -a /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi
chroot "$ROOT" update-ca-certificates >/dev/null

# pip in the build uses the system bundle (which now holds those CAs), like pip on the host.
# Only `cert` is mirrored: the host's find-links/file:// indexes do not exist in the build.
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ROOT/etc/pip.conf"

chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/tmp/* "$ROOT"/proc/* "$ROOT"/sys/* "$ROOT"/dev/*

tar -C "$ROOT" --numeric-owner -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
echo "standin: imported $TAG"
