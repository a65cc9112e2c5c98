#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run calls it): installs what the tests need, then runs them.
#
#   scripts/test.sh                 everything: engine, app through gradio_client, a real browser, slow tests
#   scripts/test.sh --fast          the fast tier: no browser, no slow tests (about a minute on 2 cores)
#   scripts/test.sh [--fast] ARGS   extra pytest arguments, e.g. scripts/test.sh --fast -x tests/test_turns.py
#
# Python packages go into the active virtual environment, or into .venv/ (created here) when none is active. The
# browser test drives Debian's Chromium with Playwright (no browser download); it is installed with apt-get when
# missing, with an emoji font and a Chinese font so that the screenshots show the page as users see it.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
if [ "${1:-}" = "--fast" ]; then
    fast=1
    shift
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    . .venv/bin/activate
fi
python -m pip install -q -r requirements.txt -r requirements-dev.txt

if [ "$fast" = 0 ] && { ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi "color emoji" \
    || ! fc-list 2>/dev/null | grep -qi "wqy"; }; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-noto-color-emoji fonts-wqy-zenhei >/dev/null
fi

export HF_HUB_OFFLINE=1  # every model in the tests is built locally
# the Hub-layout fixture (reduced copies of the published checkpoints): built once per machine under ~/.cache (about a
# minute, 3.7 GB), reused after that (tests/hub_fixture.py; $QIC_HUB_FIXTURE moves it)
python tests/hub_fixture.py
if [ "$fast" = 1 ]; then
    exec python -m pytest -m "not slow and not browser" "$@"
fi
exec python -m pytest "$@"
