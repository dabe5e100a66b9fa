#!/usr/bin/env bash
# Set up everything R Bridge needs on a fresh Debian bookworm machine (as root), then
#   bash scripts/dev.sh serve   serve the example models in ./models on http://127.0.0.1:8000
#                               (more arguments go to `rbridge serve`, e.g. --port 9000; every
#                               setting is also RBRIDGE_<NAME> in the environment)
#   bash scripts/dev.sh test    run the whole test suite (R tests, Python tests, container test)
# Re-running is cheap: installed pieces are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${RBRIDGE_VENV:-$ROOT/.venv}

# Python with its headers and a CA store (pip verifies PyPI against /etc/ssl/certs): rpy2 3.5.17
# is built from source against R's and Python's headers; its cffi comes as a wheel.
BASE_PACKAGES="python3 python3-venv python3-dev ca-certificates"
# r-recommended: R's recommended packages (MASS, mgcv, nnet, survival, nlme, rpart, class, ...), which
# --no-install-recommends leaves out of r-base-core, so that models from them load.
R_PACKAGES="r-base-core r-base-dev r-recommended r-cran-randomforest r-cran-ranger r-cran-gbm r-cran-e1071
  r-cran-rpart r-cran-jsonlite r-cran-testthat"
# The model zoo of the tests (tests/fixtures/make_fixtures.R) trains models of these packages too.
ZOO_PACKAGES="r-cran-glmnet r-cran-caret r-cran-earth r-cran-partykit r-cran-kernlab r-cran-lme4 r-cran-quantreg"
# r-cran-httr: the R client (clients/r, tests/integration/test_r_client.py and test_rollout.py) imports it.
TEST_PACKAGES="$ZOO_PACKAGES r-cran-plumber r-cran-httr wrk nginx chromium openssl"

need_apt() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> apt-get install ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

setup_python() {
  local extras=$1
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> python3 -m venv $VENV"
    python3 -m venv "$VENV"
  fi
  echo "==> pip install -e .[$extras]"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[$extras]"
}

case "${1:-}" in
  serve)
    shift
    need_apt $BASE_PACKAGES $R_PACKAGES
    setup_python "r,python-models"
    exec "$VENV/bin/rbridge" serve --models "$ROOT/models" "$@"
    ;;
  test)
    shift
    need_apt $BASE_PACKAGES $R_PACKAGES $TEST_PACKAGES
    setup_python "r,test,python-models"
    echo "==> R tests (tests/r)"
    Rscript tests/r/run.R
    echo "==> Python tests"
    export RB_TEST_CONTAINER=${RB_TEST_CONTAINER:-1}
    exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
    ;;
  *)
    echo "usage: bash scripts/dev.sh serve [rbridge serve options] | test [pytest options]" >&2
    exit 2
    ;;
esac
