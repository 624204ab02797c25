"""lmshrink's local lm-eval tasks (YAML configs, their items and loaders), registered through
``lm_eval.tasks.TaskManager(include_path=TASKS_DIR)`` by :mod:`lmshrink.evaluate.lm_eval`."""

from pathlib import Path

#: the folder lm-eval scans for lmshrink's task configs
TASKS_DIR = Path(__file__).parent
