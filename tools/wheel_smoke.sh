#!/usr/bin/env bash
# Builds the wheel and sdist, installs the wheel into a fresh venv outside the repository and runs a smoke test
# (save, load, info): what `pip install submask` gets is tested, not only the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls "$work"/dist/submask-*.whl "$work"/dist/submask-*.tar.gz >/dev/null
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q -c constraints.txt "$work"/dist/submask-*.whl
cd "$work"
"$work/venv/bin/python" - <<'PY'
import numpy as np
import submask

assert "site-packages" in submask.__file__, submask.__file__
mask = submask.Mask.from_numpy({"w": np.array([[True, False], [False, True]]), "b": np.zeros(3, dtype=bool)})
submask.save(mask, "w.smask")
loaded = submask.load("w.smask")
assert loaded["w"].to_numpy().tolist() == [[True, False], [False, True]] and loaded["b"].count == 0
print("wheel smoke: save and load ok from", submask.__file__)
PY
"$work/venv/bin/submask" info w.smask >info.txt
grep -q "2 tensors, 2 of 7 set" info.txt || { cat info.txt; exit 1; }
echo "wheel smoke: submask info ok"
