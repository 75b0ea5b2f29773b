#!/bin/sh
# Installs what sitefs needs to build, test and run on Debian 12 (as root).
# Quiet and quick when everything is already there.
set -eu
PKGS="meson ninja-build pkg-config gcc clang libclang-rt-14-dev llvm
  libfuse3-dev fuse3 libcurl4-openssl-dev libsqlite3-dev libzstd-dev libzip-dev
  zlib1g-dev libssl-dev libjson-c-dev nginx-light python3 python3-dev python3-venv python3-pytest
  python3-packaging python3-pip-whl python3-setuptools-whl python3-wheel-whl
  python3-six python3-yaml python3-pygments python3-attr python3-pyparsing
  python3-iniconfig python3-pluggy python3-more-itertools python3-distro
  python3-toml python3-xmltodict"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "sitefs: missing Debian packages:$missing -- run this script as root" >&2
  exit 1
fi
echo "sitefs: installing$missing" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
