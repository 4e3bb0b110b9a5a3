# Single-image tomography: the Snakemake workflow (docs/workflow.md).
#
#   snakemake --cores all                                   the embedded demo (config.yaml, run: demo)
#   snakemake --cores all --configfile workflow/configs/paper.yaml       the paper's UTCT dataset
#   snakemake --report results/<run>/report.html            the HTML report of a finished run
#
# The rules live in workflow/rules/ (snakemake_fixes.smk first: work-arounds of Snakemake bugs that
# would skip work in silence, no rules): common.smk (settings, ids, helper functions; no rules),
# repairs.smk (what the workspace's files claim, checked and mended before the DAG is built; no rules),
# data.smk (demo movies -> fetch -> cube -> store -> render per species -> finalize),
# model.smk (train -> evaluate -> examples -> figures, apps; real_xray), cv.smk (cross-validation folds:
# cv_view -> cv_train -> cv_evaluate -> cv_summary; model.cv.folds) and report.smk (the report's
# description; the explorer). A new rule file is included the same way and adds its final outputs to
# `rule all` with `add_targets(...)` from common.smk.

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version
from tomodata.config_check import (ConfigError, check_config, check_config_files, check_resources, rule_names,
                                   schema_keys, value_errors, value_warnings)

min_version("9.0")


# the config files, named in every message (Snakemake's own messages name none, and YAML keeps the
# last of a key given twice in silence); overlays after the file they change (docs/workflow.md, "Configs")
try:
    check_config_files(workflow.overwrite_configfiles,
                       known_keys=schema_keys(f"{workflow.basedir}/workflow/schemas/config.schema.yaml"))
except ConfigError as e:
    raise WorkflowError(str(e)) from None


configfile: "config.yaml"


# every problem listed with its key path and a "did you mean" (no schema dump); fills the defaults
# in place as snakemake.utils.validate did; `overlay` belongs to its file, not to the run
config.pop("overlay", None)
try:
    check_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml", workflow.config_settings.config)
    if _errors := value_errors(config):
        raise ConfigError(_errors)
except ConfigError as e:
    raise WorkflowError(str(e)) from None
if workflow.is_main_process:
    for _warning in value_warnings(config):
        logger.warning(f"config: {_warning}")


include: "workflow/rules/snakemake_fixes.smk"  # first: work-arounds of Snakemake bugs that would skip work
include: "workflow/rules/common.smk"
include: "workflow/rules/repairs.smk"  # parse-time repairs of the workspace (stale markers, lost files)
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/cv.smk"  # cross-validation over species (model.cv.folds; off by default)
include: "workflow/rules/report.smk"


# a misspelt rule name under `resources` would otherwise fall back to the default silently; the rules
# defined now, and those of the rule files only defined for other configs (demo_movies, align, ...)
try:
    check_resources(config, [r.name for r in workflow.rules] + rule_names(f"{workflow.basedir}/workflow/rules"))
except ConfigError as e:
    raise WorkflowError(str(e)) from None
forget_incomplete_folders()  # after every include: the folder outputs are targets by then
restore_lost_val_log()


rule all:
    input:
        all_targets,
    default_target: True
