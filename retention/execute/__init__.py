"""Count and execute plans: batches, transactions, guards.

One rule at a time, one transaction per batch.  The modules, in the order a rule goes through them:

* :mod:`.count`: what the rule would do now (the dry-run numbers, the guard's count);
* :mod:`.rules`: the guard, then the batch loop, one transaction per batch;
* :mod:`.keys`: key ranges, the only way batches address rows (never OFFSET);
* :mod:`.batch`: one batch's statements, locking first when a delete cascades;
* :mod:`.cascade`: the child rows a delete reaches, counted, locked and changed;
* :mod:`.errors` and :mod:`.show`: what a report may say of an error or a statement.
"""

from retention.execute.batch import NOT_DONE, apply_batch
from retention.execute.cascade import (Roots, cascade_key, cascade_selections, count_cascades, empty_cascades,
                                       plan_table)
from retention.execute.count import count_rule, count_touch
from retention.execute.errors import StrategyError, describe_error
from retention.execute.options import BatchHooks, ExecOptions
from retention.execute.rules import BATCH_ATTEMPTS, execute_rule, guard_state, statements
from retention.execute.show import show_statement

__all__ = ["BATCH_ATTEMPTS", "NOT_DONE", "BatchHooks", "ExecOptions", "Roots", "StrategyError", "apply_batch",
           "cascade_key", "cascade_selections", "count_cascades", "count_rule", "count_touch", "describe_error",
           "empty_cascades", "execute_rule", "guard_state", "plan_table", "show_statement", "statements"]
