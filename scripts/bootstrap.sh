#!/usr/bin/env bash
# Creates .venv with Python 3.10 and installs requirements/lock.txt plus petpark (editable).
# `bootstrap.sh airflow` does the same for .venv-airflow from requirements/airflow-lock.txt.
# Re-running is cheap: it reinstalls only when the lock or setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  local candidate
  for candidate in "${PETPARK_PYTHON:-}" python3.10 "$(command -v pyenv >/dev/null && echo "$(pyenv root)/versions/3.10*/bin/python3.10")" /usr/bin/python3.10 /usr/local/bin/python3.10; do
    for path in $candidate; do
      if [ -n "$path" ] && "$path" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
        echo "$path"
        return 0
      fi
    done
  done
  return 1
}

venv=.venv lock=requirements/lock.txt
if [ "${1:-}" = airflow ]; then
  venv=.venv-airflow lock=requirements/airflow-lock.txt
fi
stamp=$venv/.petpark-installed
want="$(cat "$lock" setup.py | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x $venv/bin/python ]; then
  python=$(find_python310) || { echo "bootstrap: Python 3.10 not found (TFX 1.16 needs it); set PETPARK_PYTHON" >&2; exit 1; }
  echo "bootstrap: creating $venv with $python"
  "$python" -m venv $venv
fi
echo "bootstrap: installing $lock into $venv (a few minutes on a fresh machine)"
$venv/bin/python -m pip install -qq --disable-pip-version-check pip==26.3
$venv/bin/python -m pip install -qq --disable-pip-version-check --no-deps -r "$lock"
$venv/bin/python -m pip install -qq --disable-pip-version-check --no-deps -e .
echo "$want" > "$stamp"
echo "bootstrap: ready ($venv/bin/petpark)"
