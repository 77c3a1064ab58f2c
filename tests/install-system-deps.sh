#!/usr/bin/env bash
# Installs the real servers the integration tests talk to (Debian packages).
# Package scripts try to start daemons (postfix on :25, nsd on :53, freshclam on the internet):
# a policy-rc.d that answers 101 stops that; the tests run every daemon themselves on loopback.
set -euo pipefail
# podman (with runc, slirp4netns, netavark, aardvark-dns) and debootstrap build and run the container image.
packages=(rspamd clamav-daemon nsd redis-server postfix haproxy swaks
          podman runc slirp4netns netavark aardvark-dns debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
  $sudo_cmd chmod +x "$policy"
  created_policy=1
fi
echo "postfix postfix/main_mailer_type select No configuration" | $sudo_cmd debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# freshclam and the packaged daemons may have been started regardless of policy-rc.d.
$sudo_cmd pkill -x freshclam 2>/dev/null || true
if [ "$created_policy" -eq 1 ]; then
  $sudo_cmd rm -f "$policy"
fi
