# Sourced by the Makefile and CI: puts uv on PATH and picks a local Python 3.12 for it.
# Safe to source repeatedly; changes nothing when everything is already in place.

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "uv>=0.5" >&2 || {
    echo "error: uv is missing and could not be installed with pip" >&2
    return 1 2>/dev/null || exit 1
  }
fi

if [ -z "${UV_PYTHON:-}" ]; then
  for candidate in "$(command -v python3.12 2>/dev/null)" /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      export UV_PYTHON="$candidate"
      # A local interpreter exists: never try to download one (this machine may be offline).
      export UV_PYTHON_DOWNLOADS=never
      break
    fi
  done
fi
