# The model part: train the network on the finished store, evaluate it against the NN and Oracle
# baselines on the held-out species, draw the paper's figures and the applications.
#
#   results/RUN/model/last.pt          train      (not a declared output, so that Snakemake keeps it: a re-run
#                                                 job resumes from it where it was made with the same settings
#                                                 and data, else starts afresh; tomo train --restart-if-changed)
#   results/RUN/model/best.pt          train      the checkpoint with the lowest loss on the val split:
#                                                 model choice; evaluate, figures, apps and real_xray use it
#   results/RUN/eval/summary.json      evaluate   (+ metrics.csv, summary.csv, tests.csv, ...)
#   results/RUN/examples/examples.npz  examples   the network's predictions on chosen held-out samples,
#                                                 computed once for the figures and the applications
#   results/RUN/figures/*.png          figures    (in the report, category "Evaluation"; names: model.names)
#   results/RUN/apps/                  apps       (turntable/wiggle GIFs, cut-away, anaglyph, colour)
#   results/RUN/real/NAME/             real_xray  (tomo infer --apps: volume, previews, applications
#                                                  of each radiograph in config model.real_xrays)
#
# Settings: config["model"] (workflow/schemas/config.schema.yaml). Training options that do not
# change the result (DataLoader workers, device) are Untracked.

rule train:
    input:
        final=FINAL,
    output:
        best=BEST_PT,
        log_csv=report(
            f"{MODEL_DIR}/{TRAIN_VAL_LOG}",
            caption="../report/training.rst",
            category="Training",
        ),
    params:
        store=STORE,
        out=lambda wildcards, output: os.path.dirname(output.best),
        options=train_options(),
        # untracked; --restart-if-changed, --device (and --compile) ride here so that the shell text
        # stays as it was (Snakemake re-runs a job whose shell text changed: every workspace would retrain)
        workers=Untracked(
            f"{TRAIN['workers']} --restart-if-changed --device {TRAIN['device']}"
            + (" --compile" if TRAIN["compile"] else "")
        ),
    log:
        f"{LOGS}/train/train.log",
    benchmark:
        f"{BENCHMARKS}/train/train.tsv"
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=GPU_TRAIN,
    conda:
        ENV_MODEL
    shell:
        "OMP_NUM_THREADS={threads} tomo train {params.store:q} -o {params.out:q} {params.options}"
        " --workers {params.workers} > {log:q} 2>&1"


# the tables other than the two in the report (targets of `all`)
EVAL_OTHER_TABLES = [f"{EVAL_DIR}/{t}" for t in EVAL_TABLES if t not in (EVAL_SUMMARY_CSV, EVAL_TESTS)]


rule evaluate:
    input:
        checkpoint=BEST_PT,
        final=FINAL,
    output:
        summary=EVAL_JSON,
        table=report(
            f"{EVAL_DIR}/{EVAL_SUMMARY_CSV}",
            caption="../report/evaluation.rst",
            category="Evaluation",
        ),
        tests=report(
            f"{EVAL_DIR}/{EVAL_TESTS}",
            caption="../report/tests.rst",
            category="Evaluation",
        ),
        # the other tables (targets of `all`): a deleted one re-runs the evaluation (undeclared, figures failed later)
        tables=EVAL_OTHER_TABLES,
    params:
        store=STORE,
        out=lambda wildcards, output: os.path.dirname(output.summary),
        options=_opts([("--split", EVAL["split"]), ("--max-samples", EVAL["max_samples"]), ("--batch", EVAL["batch"])]),
        device=Untracked(TRAIN["device"]),
        oracle_memory=Untracked(EVAL["oracle_memory_gb"]),  # the Oracle stays exact: changes no metric
    log:
        f"{LOGS}/evaluate/evaluate.log",
    benchmark:
        f"{BENCHMARKS}/evaluate/evaluate.tsv"
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=GPU_TRAIN,
    conda:
        ENV_MODEL
    shell:
        "OMP_NUM_THREADS={threads} tomo evaluate {params.store:q} --checkpoint {input.checkpoint:q}"
        " -o {params.out:q} {params.options} --device {params.device}"
        " --oracle-memory-gb {params.oracle_memory} > {log:q} 2>&1"


rule examples:
    input:
        summary=EVAL_JSON,
        checkpoint=BEST_PT,
    output:
        examples=EXAMPLES,
    params:
        store=STORE,
        eval=lambda wildcards, input: os.path.dirname(input.summary),
        examples=N_EXAMPLES,
    log:
        f"{LOGS}/examples/examples.log",
    benchmark:
        f"{BENCHMARKS}/examples/examples.tsv"
    threads: res("examples", "threads")
    resources:
        mem_mb=res("examples", "mem_mb"),
        runtime=res("examples", "runtime"),
    conda:
        ENV_MODEL
    shell:
        "OMP_NUM_THREADS={threads} tomo examples {params.store:q} --checkpoint {input.checkpoint:q}"
        " --eval {params.eval:q} -o {output.examples:q} --examples {params.examples} > {log:q} 2>&1"


rule figures:
    input:
        summary=EVAL_JSON,
        examples=EXAMPLES,
    output:
        **{
            name: report(
                f"{RESULTS}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Evaluation",
                subcategory="Figures",
            )
            for name in FIGURES
        },
    params:
        eval=lambda wildcards, input: os.path.dirname(input.summary),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        examples=EVAL["examples"],
    log:
        f"{LOGS}/figures/figures.log",
    benchmark:
        f"{BENCHMARKS}/figures/figures.tsv"
    threads: res("figures", "threads")
    resources:
        mem_mb=res("figures", "mem_mb"),
        runtime=res("figures", "runtime"),
    conda:
        ENV_MODEL
    shell:
        "OMP_NUM_THREADS={threads} tomo figures --eval {params.eval:q} -o {params.out:q}"
        " --examples-file {input.examples:q} --examples {params.examples} > {log:q} 2>&1"


rule apps:
    input:
        examples=EXAMPLES,
    output:
        apps=report(
            directory(f"{RESULTS}/apps"),
            patterns=["{name}.png", "{name}.gif"],
            caption="../report/apps.rst",
            category="Applications",
        ),
    params:
        examples=APPS["examples"],
        frames=APPS["frames"],
    log:
        f"{LOGS}/apps/apps.log",
    benchmark:
        f"{BENCHMARKS}/apps/apps.tsv"
    threads: res("apps", "threads")
    resources:
        mem_mb=res("apps", "mem_mb"),
        runtime=res("apps", "runtime"),
    conda:
        ENV_MODEL
    shell:
        "OMP_NUM_THREADS={threads} NUMBA_NUM_THREADS={threads} tomo apps --examples-file {input.examples:q}"
        " -o {output.apps:q} --examples {params.examples} --frames {params.frames} > {log:q} 2>&1"


rule real_xray:
    input:
        xray=real_xray_path,
        checkpoint=BEST_PT,
    output:
        volume=f"{RESULTS}/real/{{name}}/{{name}}.nrrd",
        record=f"{RESULTS}/real/{{name}}/{{name}}.json",
        **{
            view: report(
                f"{RESULTS}/real/{{name}}/{{name}}_{view}.png",
                caption="../report/real_xrays.rst",
                category="Real x-rays",
                subcategory="{name}",
                labels={"radiograph": "{name}", "image": view},
            )
            for view in REAL_PREVIEWS
        },
        apps=report(
            directory(f"{RESULTS}/real/{{name}}/apps"),
            patterns=["{file}.png", "{file}.gif"],
            caption="../report/real_xrays.rst",
            category="Real x-rays",
            subcategory="{name}",
        ),
    params:
        options=real_xray_options,
        device=Untracked(TRAIN["device"]),
    log:
        f"{LOGS}/real_xray/{{name}}.log",
    benchmark:
        f"{BENCHMARKS}/real_xray/{{name}}.tsv"
    wildcard_constraints:
        name=REAL_NAME_PATTERN,
    threads: res("real_xray", "threads")
    resources:
        mem_mb=res("real_xray", "mem_mb"),
        runtime=res("real_xray", "runtime"),
        gpu=GPU_TRAIN,
    conda:
        ENV_MODEL
    shell:
        "OMP_NUM_THREADS={threads} NUMBA_NUM_THREADS={threads} tomo infer {input.xray:q}"
        " --checkpoint {input.checkpoint:q} -o {output.volume:q} {params.options} --apps {output.apps:q}"
        " --device {params.device} > {log:q} 2>&1"


if MODEL.get("enabled", True):
    # every output a report shows or a user reads is a target: Snakemake makes a missing file again only
    # where something requests it (else "Nothing to be done" while --report fails for want of it)
    add_targets(*[f"{RESULTS}/figures/{name}.png" for name in FIGURES], f"{RESULTS}/apps", *EVAL_OTHER_TABLES)
    add_targets(f"{EVAL_DIR}/{EVAL_SUMMARY_CSV}", f"{EVAL_DIR}/{EVAL_TESTS}")
    for _name in REAL_XRAYS:
        add_targets(*[f"{RESULTS}/real/{_name}/{_name}{end}" for end in [".nrrd", ".json"] + [f"_{v}.png" for v in REAL_PREVIEWS]])
        add_targets(f"{RESULTS}/real/{_name}/apps")
