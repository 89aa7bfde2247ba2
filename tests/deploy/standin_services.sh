#!/usr/bin/env bash
# Builds local stand-ins for the Redis and nginx images docker-compose.yml uses, for machines
# that cannot pull from a registry (the same approach as standin_base.sh): one debootstrap'ed
# Debian bookworm root with redis-server, redis-tools, nginx and wget, imported into podman
# under two tags whose default commands match the official images':
#
#   REDIS_TAG  (default localhost/seqserve-standin/redis:7)   redis-server, WORKDIR /data (owned by redis)
#   NGINX_TAG  (default localhost/seqserve-standin/nginx:1)   nginx -g 'daemon off;'
#
# docker-compose.yml takes the image names from REDIS_IMAGE / NGINX_IMAGE, so a test points
# compose at these tags. Cached: does nothing when both tags exist (FORCE=1 rebuilds).
# Needs root, debootstrap and podman.
set -euo pipefail

REDIS_TAG="${REDIS_TAG:-localhost/seqserve-standin/redis:7}"
NGINX_TAG="${NGINX_TAG:-localhost/seqserve-standin/nginx:1}"
if [ -z "${FORCE:-}" ] && podman image exists "$REDIS_TAG" && podman image exists "$NGINX_TAG"; then
    echo "standin: $REDIS_TAG and $NGINX_TAG exist, reusing them"
    exit 0
fi

mirror() {
    local uri
    uri=$(grep -hoE '^URIs:[[:space:]]*[^[:space:]]+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | grep -v '\[' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

ROOT=$(mktemp -d /var/tmp/standin-services.XXXXXX)
cleanup() { rm -rf --one-file-system "$ROOT"; }
trap cleanup EXIT

MIRROR="${DEBIAN_MIRROR:-$(mirror)}"
echo "standin: debootstrap bookworm (redis, nginx) from $MIRROR into $ROOT"
# debootstrap replaces start-stop-daemon with a no-op while it installs, so the packages'
# maintainer scripts start nothing on this host.
debootstrap --variant=minbase --include=redis-server,redis-tools,nginx,wget,ca-certificates \
    bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -n 40 "$ROOT.log"; rm -f "$ROOT.log"; exit 1; }
rm -f "$ROOT.log"

# As in the official redis image: data in /data, owned by the unprivileged redis user.
mkdir -p "$ROOT/data"
chroot "$ROOT" chown redis:redis /data
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/tmp/* "$ROOT"/proc/* "$ROOT"/sys/* "$ROOT"/dev/*

PATH_ENV='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
tar -C "$ROOT" --numeric-owner -c . | podman import \
    --change "$PATH_ENV" --change 'WORKDIR /data' --change 'CMD ["redis-server"]' \
    - "$REDIS_TAG" >/dev/null
tar -C "$ROOT" --numeric-owner -c . | podman import \
    --change "$PATH_ENV" --change 'CMD ["nginx", "-g", "daemon off;"]' \
    - "$NGINX_TAG" >/dev/null
echo "standin: imported $REDIS_TAG and $NGINX_TAG"
