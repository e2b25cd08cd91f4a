#!/bin/sh
# Print the first Python that really runs and is one vcam supports (3.10-3.14), for the Makefile.
#   sh scripts/pick_python.sh                 # python3, else the newest python3.1x found
#   sh scripts/pick_python.sh python3.13      # that one (by name on PATH, else from pyenv's versions)
# Each name is tried on PATH first, then in pyenv's versions folder: pyenv puts a shim on PATH for every
# installed version, but a shim only runs for the versions selected with `pyenv global/local`.
supported() {
  "$1" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 14))' >/dev/null 2>&1
}
for name in ${*:-python3 python3.13 python3.12 python3.11 python3.10 python3.14}; do
  if supported "$name"; then echo "$name"; exit 0; fi
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/"$(basename "$name")"; do
    if supported "$candidate"; then echo "$candidate"; exit 0; fi
  done
done
exit 1
