# The HTML report: `snakemake --report results/<run>/report.html` (after a run; it re-runs nothing).
#
# The report's front page is workflow/report/workflow.rst (Jinja2: it reads snakemake.config).
# Results enter the report where a rule flags an output with report(..., caption=..., category=...):
#   category "Dataset"   results/<run>/dataset.final.json (store_finalize: the completion record)
#   category "Previews"  results/<run>/previews/<id>_sheet.png (previews), one subcategory
#                        per split, labels species and split
# model.smk flags its figures the same way, with captions in
# workflow/report/ and categories of their own ("Training", "Evaluation").

report: "../report/workflow.rst"


# The web explorer of held-out samples (docs/explorer.md): results/RUN/explorer/index.html, a static
# page that opens from the file system (no server, no network): the input x-ray and ours, ground
# truth, NN and Oracle rendered live by niivue (orbit, clip plane, transfer functions, anaglyph, the
# x-ray from the current view). In the report (category "Explorer"): a contact sheet of the samples'
# input x-rays, its caption links the page (a pure-HTML report cannot hold the folder itself).
EXPLORER = config["model"].get("explorer") or {}


rule explorer:
    input:
        summary=EVAL_JSON,
        checkpoint=BEST_PT,
    output:
        explorer=directory(f"{RESULTS}/{EXPLORER_DIR}"),
        sheet=report(
            f"{RESULTS}/explorer_samples.png",
            caption="../report/explorer.rst",
            category="Explorer",
        ),
    params:
        store=STORE,
        eval=lambda wildcards, input: os.path.dirname(input.summary),
        samples=EXPLORER.get("samples", 24),
        max_size=EXPLORER.get("max_size", 64),
    log:
        f"{LOGS}/explorer/explorer.log",
    benchmark:
        f"{BENCHMARKS}/explorer/explorer.tsv"
    threads: res("explorer", "threads")
    resources:
        mem_mb=res("explorer", "mem_mb"),
        runtime=res("explorer", "runtime"),
    conda:
        ENV_MODEL
    shell:
        "OMP_NUM_THREADS={threads} tomo explorer --store {params.store:q} --checkpoint {input.checkpoint:q}"
        " --eval {params.eval:q} -o {output.explorer:q} --samples {params.samples}"
        " --max-size {params.max_size} --sheet {output.sheet:q} > {log:q} 2>&1"


if MODEL.get("enabled", True) and EXPLORER.get("enabled", True):
    add_targets(f"{RESULTS}/{EXPLORER_DIR}", f"{RESULTS}/explorer_samples.png")
