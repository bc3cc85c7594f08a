#!/usr/bin/env bash
# Install the TeX Live subset that `dla-repro report paper --compile` needs (Debian/Ubuntu, as root).
# Idempotent: does nothing when pdflatex, latexmk and pdftoppm are already on PATH.
# Usage: scripts/install-latex.sh            (log: ${LATEX_INSTALL_LOG:-/tmp/install-latex.log})
set -euo pipefail

PACKAGES=(texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-science
          texlive-fonts-recommended latexmk poppler-utils)
LOG=${LATEX_INSTALL_LOG:-/tmp/install-latex.log}

have_all() { command -v pdflatex >/dev/null && command -v latexmk >/dev/null && command -v pdftoppm >/dev/null; }

if have_all; then
    echo "install-latex: pdflatex, latexmk and pdftoppm already installed; nothing to do"
    exit 0
fi

fail() {
    echo "install-latex: error: $1" >&2
    echo "install-latex: the last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
}

command -v apt-get >/dev/null || fail "apt-get not found: install ${PACKAGES[*]} with your system's package manager"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || fail "must run as root (or with sudo available) to install packages"
    SUDO="sudo"
fi

: >"$LOG"
export DEBIAN_FRONTEND=noninteractive
echo "install-latex: installing ${PACKAGES[*]} (log: $LOG)"
# Update the package lists once, only when apt has none or the packages are not known yet.
if ! apt-cache show texlive-latex-base >/dev/null 2>&1; then
    $SUDO apt-get update -q >>"$LOG" 2>&1 || fail "apt-get update failed (no network or no apt sources?)"
fi
if ! $SUDO apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$LOG" 2>&1; then
    # stale lists (404 on a package): refresh once and retry
    $SUDO apt-get update -q >>"$LOG" 2>&1 || fail "apt-get update failed (no network or no apt sources?)"
    $SUDO apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$LOG" 2>&1 \
        || fail "apt-get install of ${PACKAGES[*]} failed"
fi
have_all || fail "packages installed but pdflatex/latexmk/pdftoppm still not on PATH"
echo "install-latex: done ($(pdflatex --version | head -n 1))"
