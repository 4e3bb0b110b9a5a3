# Cross-validation over species (model.cv.folds = K >= 3; off by default): every species is a test
# species once. Per fold k (tomodata.store.folds, docs/model.md "Cross-validation"):
#
#   results/RUN/cv/fold{k}/dataset.zarr/   cv_view      a read-only view of the store with fold k's splits
#                                                       (its zarr.json; species/ links to the store's data)
#   results/RUN/cv/fold{k}/model/best.pt   cv_train     as rule train, on the view (val: part k+1)
#   results/RUN/cv/fold{k}/eval/           cv_evaluate  as rule evaluate, on the view's test species (part k)
#   results/RUN/cv/summary.csv, ...        cv_summary   the K evaluations pooled (model.cross_validation)
#
# The run's own train/val/test split (rules train, evaluate) is untouched; the folds ignore it, and
# summary.json says which species were the store's val species, on which settings were chosen.

FOLD_DIR = f"{CV_DIR}/fold{{fold}}"  # a fold's folder, laid out as a run's (tomodata.run_layout)

rule cv_view:
    input:
        final=FINAL,
    output:
        view=f"{FOLD_DIR}/{STORE_NAME}/zarr.json",
    params:
        store=STORE,
        out=lambda wildcards, output: os.path.dirname(output.view),
        folds=CV_FOLDS,
        seed=CV["seed"],
    wildcard_constraints:
        fold=r"\d+",
    log:
        f"{LOGS}/cv/view_fold{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/cv/view_fold{{fold}}.tsv"
    threads: cv_res("cv_view", None, "threads")
    resources:
        mem_mb=cv_res("cv_view", None, "mem_mb"),
        runtime=cv_res("cv_view", None, "runtime"),
    conda:
        ENV_TOMODATA
    shell:
        "tomo cv-view {params.store:q} --folds {params.folds} --fold {wildcards.fold} --seed {params.seed}"
        " -o {params.out:q} > {log:q} 2>&1"


rule cv_train:
    input:
        view=f"{FOLD_DIR}/{STORE_NAME}/zarr.json",
    output:
        best=f"{FOLD_DIR}/{MODEL_DIR_NAME}/{TRAIN_BEST}",
        log_csv=f"{FOLD_DIR}/{MODEL_DIR_NAME}/{TRAIN_VAL_LOG}",
    params:
        store=fold_store,
        out=lambda wildcards, output: os.path.dirname(output.best),
        options=train_options(),
        workers=Untracked(
            f"{TRAIN['workers']} --restart-if-changed --device {TRAIN['device']}"
            + (" --compile" if TRAIN["compile"] else "")
        ),
    wildcard_constraints:
        fold=r"\d+",
    log:
        f"{LOGS}/cv/train_fold{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/cv/train_fold{{fold}}.tsv"
    threads: cv_res("cv_train", "train", "threads")
    resources:
        mem_mb=cv_res("cv_train", "train", "mem_mb"),
        runtime=cv_res("cv_train", "train", "runtime"),
        gpu=GPU_TRAIN,
    conda:
        ENV_MODEL
    shell:
        "OMP_NUM_THREADS={threads} tomo train {params.store:q} -o {params.out:q} {params.options}"
        " --workers {params.workers} > {log:q} 2>&1"


rule cv_evaluate:
    input:
        checkpoint=f"{FOLD_DIR}/{MODEL_DIR_NAME}/{TRAIN_BEST}",
        view=f"{FOLD_DIR}/{STORE_NAME}/zarr.json",
    output:
        summary=f"{FOLD_DIR}/{EVAL_DIR_NAME}/{EVAL_SUMMARY}",
        metrics=f"{FOLD_DIR}/{EVAL_DIR_NAME}/{EVAL_METRICS}",
    params:
        store=fold_store,
        out=lambda wildcards, output: os.path.dirname(output.summary),
        options=_opts([("--max-samples", EVAL["max_samples"]), ("--batch", EVAL["batch"])]),
        device=Untracked(TRAIN["device"]),
        oracle_memory=Untracked(EVAL["oracle_memory_gb"]),
    wildcard_constraints:
        fold=r"\d+",
    log:
        f"{LOGS}/cv/evaluate_fold{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/cv/evaluate_fold{{fold}}.tsv"
    threads: cv_res("cv_evaluate", "evaluate", "threads")
    resources:
        mem_mb=cv_res("cv_evaluate", "evaluate", "mem_mb"),
        runtime=cv_res("cv_evaluate", "evaluate", "runtime"),
        gpu=GPU_TRAIN,
    conda:
        ENV_MODEL
    shell:
        "OMP_NUM_THREADS={threads} tomo evaluate {params.store:q} --checkpoint {input.checkpoint:q}"
        " -o {params.out:q} --split test {params.options} --device {params.device}"
        " --oracle-memory-gb {params.oracle_memory} > {log:q} 2>&1"


rule cv_summary:
    input:
        evals=expand(f"{FOLD_DIR}/{EVAL_DIR_NAME}/{EVAL_SUMMARY}", fold=range(CV_FOLDS)),
    output:
        summary=report(f"{CV_DIR}/{EVAL_SUMMARY_CSV}", caption="../report/cross_validation.rst", category="Evaluation"),
        tests=f"{CV_DIR}/{EVAL_TESTS}",
        species=f"{CV_DIR}/{EVAL_SPECIES}",
        folds=f"{CV_DIR}/{CV_FOLDS_CSV}",
        json=f"{CV_DIR}/{EVAL_SUMMARY}",
        page=f"{CV_DIR}/{CV_REPORT}",
    params:
        evals=lambda wildcards, input: " ".join(shlex.quote(os.path.dirname(p)) for p in input.evals),
        out=lambda wildcards, output: os.path.dirname(output.summary),
    log:
        f"{LOGS}/cv/summary.log",
    benchmark:
        f"{BENCHMARKS}/cv/summary.tsv"
    threads: cv_res("cv_summary", None, "threads")
    resources:
        mem_mb=cv_res("cv_summary", None, "mem_mb"),
        runtime=cv_res("cv_summary", None, "runtime"),
    conda:
        ENV_MODEL
    shell:
        "tomo cv-summary {params.evals} -o {params.out:q} > {log:q} 2>&1"


if CV_FOLDS:
    add_targets(*CV_TABLES, f"{CV_DIR}/{EVAL_SUMMARY}")
