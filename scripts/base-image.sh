#!/usr/bin/env bash
# Build the lab's base image locally, for machines that cannot pull
# debian:bookworm-slim from a registry: Debian bookworm (minbase) made with
# debootstrap from Debian's own packages, trimmed the way the slim image is, and
# imported into the engine as lab-base:bookworm.
#
#   scripts/base-image.sh          build it unless the image already exists
#   scripts/base-image.sh --force  rebuild it
#
# Then build the lab on it: LAB_BASE_IMAGE=lab-base:bookworm docker compose build
# (lab/docker.py does that by itself when the pull fails).
#
# Environment:
#   LAB_BASE_TAG        image name (default lab-base:bookworm)
#   LAB_DEBIAN_MIRROR   Debian mirror for debootstrap (default http://deb.debian.org/debian)
set -euo pipefail
source "$(dirname "$0")/lib/apt.sh"

TAG=${LAB_BASE_TAG:-lab-base:bookworm}
MIRROR=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

say() { printf 'base-image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [[ ${1:-} != --force ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG already exists (--force rebuilds it)"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "debootstrap needs root"
timeout 10 docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/docker-engine.sh starts one)"
if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap with apt-get"
    apt_install debootstrap || die "apt-get could not install debootstrap: run \`apt-get install debootstrap\` and read its error"
fi

rootfs=$(mktemp -d /var/tmp/lab-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

say "debootstrap --variant=minbase $SUITE from $MIRROR (about 20 s)"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2
    die "debootstrap failed (full log: $rootfs.log)"
}
rm -f "$rootfs.log"

# Trim it as debian:bookworm-slim is trimmed, so images built on either are alike:
# no docs, man pages or translations now or in later apt-get installs, no apt
# caches kept, no package lists baked in.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
printf 'Acquire::Languages "none";\n' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
# The same sources the slim image has (debootstrap writes only the main suite).
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
EOF
find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/{man,info,groff,lintian,linda}/* \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true

say "importing as $TAG"
tar -C "$rootfs" --numeric-owner -c . |
    docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
        --message "debootstrap --variant=minbase $SUITE" - "$TAG" >/dev/null
say "built $TAG ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
