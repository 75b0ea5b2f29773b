#!/bin/sh
# What the benchmark harness needs on top of tools/install-deps.sh (Debian 12,
# as root): the data-science stack whose packages are repacked into the
# workload's wheelhouse, and the measuring tools.  The test path does not
# need any of it.
set -eu
"$(dirname "$0")/install-deps.sh"
PKGS="python3-numpy python3-pandas python3-pandas-lib python3-scipy python3-matplotlib
  python3-sklearn python3-sklearn-lib python3-sympy python3-ipykernel python3-pip-whl
  openssl strace hyperfine time"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "sitefs bench: missing Debian packages:$missing -- run as root" >&2
  exit 1
fi
echo "sitefs bench: installing$missing" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
