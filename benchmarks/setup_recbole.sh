#!/usr/bin/env bash
# Create benchmarks/.venv with RecBole 1.2.1 for the benchmark comparison rows.
#
# --system-site-packages: torch, numpy, scikit-learn and the editable peterrec come from the system Python, so
# the venv adds only RecBole and the small pure-Python modules its model import needs (colorlog, texttable).
# RecBole's other declared dependencies (ray, tensorboard, thop, plotly, ...) are not needed to time its residual
# block; benchmarks/recbole_shims.py stands in for the module-level imports of tensorboard and pandas.
#
#   bash benchmarks/setup_recbole.sh               # what benchmarks.run needs
#   bash benchmarks/setup_recbole.sh --end-to-end  # + pandas and tensorboard, for RecBole's own pipeline (end_to_end.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [ ! -x benchmarks/.venv/bin/python ]; then
    "$PYTHON" -m venv --system-site-packages benchmarks/.venv
fi
benchmarks/.venv/bin/pip install --no-deps recbole==1.2.1
benchmarks/.venv/bin/pip install --no-deps colorlog==4.7.2 colorama texttable
if [ "${1:-}" = "--end-to-end" ]; then
    benchmarks/.venv/bin/pip install pandas tensorboard
fi
benchmarks/.venv/bin/python -c "from benchmarks.recbole_shims import import_residual_block; import_residual_block()"
echo "RecBole ready: benchmarks/.venv/bin/python -m benchmarks.run"
