"""Benchmarks for peterrec: ``python -m benchmarks.run`` prints one table (see docs/performance.md).

Kept out of the package and of the default test run; RecBole is imported from ``benchmarks/.venv``
(``benchmarks/setup_recbole.sh``).
"""
