# Work-arounds for Snakemake bugs that would make this workflow skip work in silence (no rules here).
#
# snakemake/snakemake#4166 (open, Snakemake 9): while it decides which jobs must run, Snakemake
# "masks" every job downstream of a job that has to re-run, expecting a breadth-first walk from that
# job to reach them. The walk does not follow `ancient()` inputs, so a job reached only through an
# ancient input, and everything after it, is never looked at: not for a missing output, nor for
# changed params. This workflow takes the fetch record and the store's created marker as
# `ancient()` (docs/workflow.md, "Incremental runs"), so a re-run fetch (another
# `data.fetch.in_place`, data moved) skipped new specimens and a missing checkpoint in the same run,
# with exit code 0. The fix: while Snakemake decides, the masking walk does not cross an edge whose
# files are all ancient either, so the jobs behind such an edge are looked at for reasons of their
# own. Masking is only a shortcut (every masked job would be marked by the walk anyway), so looking
# at more jobs never changes a correct decision. tests/test_workflow_extend.py holds the case.

import functools

import snakemake.dag
from snakemake.logging import logger


def _patch_ancient_masking(dag_cls):
    """Make ``dag_cls.update_needrun``'s masking walk skip all-ancient edges; False where this
    Snakemake's internals are not the ones the fix was written for (then nothing is changed)."""
    needrun, bfs = getattr(dag_cls, "update_needrun", None), getattr(dag_cls, "bfs", None)
    if needrun is None or bfs is None or getattr(needrun, "_tomo_ancient_fix", False):
        return needrun is not None and getattr(needrun, "_tomo_ancient_fix", False)

    @functools.wraps(needrun)
    async def update_needrun(self, *args, **kwargs):
        self._tomo_deciding = True
        try:
            return await needrun(self, *args, **kwargs)
        finally:
            self._tomo_deciding = False

    @functools.wraps(bfs)
    def masking_bfs(self, direction, *jobs, stop=lambda job: False):
        if not getattr(self, "_tomo_deciding", False) or direction is not getattr(self, "depending", None):
            yield from bfs(self, direction, *jobs, stop=stop)
            return
        queue, seen = list(jobs), set(jobs)
        while queue:
            job = queue.pop(0)
            if stop(job):
                continue
            yield job
            for job_, files in direction[job].items():
                if job_ not in seen and not (files and all(getattr(f, "is_ancient", False) for f in files)):
                    seen.add(job_)
                    queue.append(job_)

    update_needrun._tomo_ancient_fix = True
    dag_cls.update_needrun, dag_cls.bfs = update_needrun, masking_bfs
    return True


if not _patch_ancient_masking(snakemake.dag.DAG):
    logger.warning(
        "this Snakemake's DAG internals differ from those the work-around for snakemake#4166 was written for: "
        "with ancient inputs it may skip jobs in silence; run the workflow again until it has nothing to do"
    )
