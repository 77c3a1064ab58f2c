#!/usr/bin/env bash
# Builds a minimal Debian bookworm base image with Python 3.11 from Debian's own packages (debootstrap) and
# imports it into podman, for hosts that reach a Debian mirror but no container registry. The image carries
# the same Python the python:3.11-slim-bookworm image has, so deploy/Containerfile builds on either:
#
#   deploy/podman/local-base-image.sh                     # prints the tag it made (or found)
#   podman build --build-arg BASE=localhost/postroom-base:bookworm ...
#
# It is cached: when an image with this tag was made by this same recipe (a label holds the recipe's hash),
# nothing is rebuilt. Needs root (debootstrap), debootstrap and podman. DEBIAN_MIRROR picks the mirror.
set -euo pipefail

tag="${POSTROOM_BASE_IMAGE:-localhost/postroom-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages="python3,python3-venv,ca-certificates"
recipe="$(sha256sum "$0" | cut -c1-16)"

if [ "$(podman image inspect --format '{{ index .Labels "org.postroom.base-recipe" }}' "$tag" 2>/dev/null)" = "$recipe" ]; then
  echo "$tag"
  exit 0
fi

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/postroom-base.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >&2
# What an image never needs: package lists and downloaded .debs (an image that installs more runs
# apt-get update itself), documentation and locales.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log
tar --numeric-owner -C "$rootfs" -c . | podman import \
  --change "LABEL org.postroom.base-recipe=$recipe" \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
echo "$tag"
