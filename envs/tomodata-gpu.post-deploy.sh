#!/usr/bin/env bash
# Snakemake runs this once, inside the new conda environment envs/tomodata-gpu.yaml (--sdm conda): it
# installs this project (the tomo command, tomodata, model) without dependencies, which the
# environment already has. TOMO_PROJECT_DIR (the repository) is set by workflow/rules/common.smk.
set -euo pipefail
python -m pip install --no-deps --editable "${TOMO_PROJECT_DIR:?is set by workflow/rules/common.smk}"
