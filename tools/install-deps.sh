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
# --bench: Debian packages repacked as wheels by tests/bench/materialize.py;
# --perf: what tools/bench adds (its workload's stack and measuring tools).
case "${1:-}" in
--perf)
  PKGS="$PKGS python3-numpy python3-pandas python3-pandas-lib python3-scipy python3-matplotlib
    python3-sklearn python3-sklearn-lib python3-sympy python3-ipykernel openssl strace
    hyperfine time" ;;
--bench)
  PKGS="python3-appdirs python3-argcomplete python3-asttokens python3-attr python3-backcall
    python3-beniget python3-blinker python3-bytecode python3-contourpy python3-coverage
    python3-cycler python3-dateutil python3-decorator python3-distro python3-entrypoints
    python3-executing python3-fonttools python3-gast python3-httplib2 python3-iniconfig
    python3-ipython python3-jedi python3-joblib python3-jwt python3-kiwisolver python3-lz4
    python3-matplotlib python3-matplotlib-inline python3-more-itertools python3-mpmath
    python3-nest-asyncio python3-numpy python3-oauthlib python3-packaging python3-parso
    python3-pexpect python3-pickleshare python3-pil python3-pluggy python3-ply
    python3-prompt-toolkit python3-psutil python3-ptyprocess python3-pure-eval
    python3-pyflakes python3-pygments python3-pyparsing python3-pytest python3-scipy
    python3-six python3-sympy python3-threadpoolctl python3-toml python3-tornado
    python3-traitlets python3-tz python3-wcwidth python3-xmltodict python3-yaml curl" ;;
esac
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
