"""retention: enforce data-retention and deletion rules in application databases.

The Python API is the product; :mod:`retention.cli` is a thin layer over
:mod:`retention.commands`.  Data flows config -> schema -> plan -> execute ->
report, one module per step.
"""

__version__ = "0.1.0"
