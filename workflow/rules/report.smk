# The HTML report: `snakemake --report results/<run>/report.html` (after a run; it re-runs nothing).
#
# The report's front page is workflow/report/workflow.rst (Jinja2: it reads snakemake.config).
# Results enter the report where a rule flags an output with report(..., caption=..., category=...):
#   category "Dataset"   results/<run>/dataset.final.json (store_finalize: the completion record)
#   category "Previews"  results/<run>/previews/<id>_sheet.png (render_species), one subcategory
#                        per split, labels species and split
# Later rule files (model.smk, evaluate.smk) flag their figures the same way, with captions in
# workflow/report/ and categories of their own ("Training", "Evaluation").

report: "../report/workflow.rst"
