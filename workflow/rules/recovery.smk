# Recovery after an interrupted run (README "If a run is interrupted"). Snakemake parses the Snakefile before
# it takes its lock (.snakemake/locks), so a lock left by a killed run is removed here, and one a live run may
# hold is left alone with the process named (crucible.workflow_lock). Incomplete outputs rerun through the
# default workflow profile (profiles/default); training jobs resume from their last checkpoint.
import os as _os

from snakemake.logging import logger as _logger

from crucible.workflow_lock import clear_stale_lock, register_run

# only the snakemake the user started: not the per-job snakemake of the SLURM executor (another host) or of
# `run:` jobs, which work under the main process's lock
if workflow.is_main_process:
    _lock = clear_stale_lock(_os.getcwd())
    if _lock.action == "removed":
        _logger.info(_lock.message)
    elif _lock.action == "kept":
        _logger.warning(_lock.message)
    register_run(_os.getcwd())
