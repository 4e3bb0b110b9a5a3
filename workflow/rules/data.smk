# The data part: specimens -> density cubes -> x-rays in the sharded Zarr store (docs/store.md).
#
#   demo_movies (demo only, 1 job)   procedural species as slice movies + resources/RUN/manifest.tsv
#   fetch        (1 job / specimen)   tomo fetch --only ID: the source into resources/RUN/fetched/ID/
#                                     (with data.fetch.in_place a local source stays where it is),
#                                     its record (id, how, sha256, path) in resources/RUN/fetched/ID.tsv
#   align        (1 job / specimen)   data.align.enabled only: tomo align: the scan in the canonical
#                                     pose -> resources/RUN/aligned/ID.nii.gz + ID.json (transform,
#                                     residual); align_sheet: results/RUN/aligned_sheet.png (report)
#   cube         (1 job / specimen)   tomo cube: the fetched (or aligned) scan -> resources/RUN/cubes/ID.npz
#   store_settings (1 job)            tomo store-settings: results/RUN/dataset.settings.json
#   store_create (1 job)              tomo store-create --update: the store's metadata and empty
#                                     arrays; keeps species whose volume is unchanged
#   render_species (1 job / specimen) tomo render-species: that species' shards only and the marker
#                                     results/RUN/species/ID.done.json
#   previews     (1 job)              tomo previews: results/RUN/previews/ID_sheet.png of every species
#                                     from the store (report, category "Previews"; a lost sheet is made
#                                     again without a re-render: render_species declares no preview)
#   store_finalize (1 job)            tomo finalize: validates every species, writes the completion
#
# The store (results/RUN/dataset.zarr) is written by several rules, so no rule declares it as its
# output: marker files stand for its states (created, one per species, final). render_species
# re-runs when its cube changes or when the store's settings change: store_settings (tomo
# store-settings, params = the dataset settings) rewrites results/RUN/dataset.settings.json only
# then. It takes the created marker as `ancient()`, so an update of the store's species table
# (another split, a new specimen, another specimen's cube) re-renders nothing else: tomo
# store-create --update keeps every species whose stored volume equals its cube and resets the
# others, exactly those whose render job re-runs.

if DEMO:

    rule demo_movies:
        output:
            manifest=f"{RESOURCES}/manifest.tsv",
            movies=expand(f"{RESOURCES}/movies/{{id}}{DEMO_SUFFIX}", id=[sid for sid in IDS if is_demo(sid)]),
        params:
            demo=demo_params(),
            species=DATA["demo"]["species"],
            val=DATA["demo"]["val"],
            test=DATA["demo"]["test"],
            outdir=lambda wildcards, output: os.path.dirname(output.manifest),
        log:
            f"{LOGS}/demo_movies/demo_movies.log",
        benchmark:
            f"{BENCHMARKS}/demo_movies/demo_movies.tsv"
        threads: res("demo_movies", "threads")
        resources:
            mem_mb=res("demo_movies", "mem_mb"),
            runtime=res("demo_movies", "runtime"),
        conda:
            ENV_TOMODATA
        shell:
            "tomo demo-movies -o {params.outdir} --species {params.species} --val {params.val} --test {params.test}"
            " --movie-size {params.demo[movie_size]} --codec {params.demo[codec]} --seed {params.demo[seed]}"
            " > {log} 2>&1"


rule fetch:
    input:
        unpack(fetch_inputs),
    output:
        record=f"{FETCHED}/{{id}}.tsv",
    params:
        row=fetch_row,
        manifest=fetch_manifest,
        dest=lambda wildcards, output: os.path.dirname(output.record),
        options=fetch_options,
    log:
        f"{LOGS}/fetch/{{id}}.log",
    benchmark:
        f"{BENCHMARKS}/fetch/{{id}}.tsv"
    threads: res("fetch", "threads")
    resources:
        mem_mb=res("fetch", "mem_mb"),
        runtime=res("fetch", "runtime"),
    conda:
        ENV_TOMODATA
    shell:
        "tomo fetch {params.manifest} -d {params.dest:q} --only {wildcards.id} {params.options}"
        " > {output.record:q} 2> {log:q}"


if ALIGN:

    rule align:
        input:
            fetched=lambda wildcards: fetched_record(wildcards, "align"),
            reference=align_reference_input,
        output:
            aligned=f"{ALIGNED}/{{id}}.nii.gz",
            record=f"{ALIGNED}/{{id}}.json",
        params:
            row=align_row,
            # the value options ride in `scan`: the shell text stays as it was (Snakemake re-runs a job
            # whose shell text changed, every aligned specimen of an existing workspace)
            scan=lambda wildcards: " ".join(filter(None, (scan_options(wildcards.id), align_value_options(wildcards.id)))),
            record=lambda wildcards: shlex.quote(params_text(align_row(wildcards))),
            reference=align_reference_arg,
        log:
            f"{LOGS}/align/{{id}}.log",
        benchmark:
            f"{BENCHMARKS}/align/{{id}}.tsv"
        threads: res("align", "threads")
        resources:
            mem_mb=res("align", "mem_mb"),
            runtime=res("align", "runtime"),
        conda:
            ENV_TOMODATA
        shell:
            "tomo align --fetched {input.fetched:q} {params.scan} -o {output.aligned:q} --id {wildcards.id}"
            " {params.reference} --record-params {params.record} --threads {threads} > {log:q} 2>&1"

    rule align_sheet:
        input:
            aligned=expand(f"{ALIGNED}/{{id}}.nii.gz", id=IDS),
            records=expand(f"{ALIGNED}/{{id}}.json", id=IDS),
        output:
            sheet=report(
                f"{RESULTS}/aligned_sheet.png",
                caption="../report/aligned_sheet.rst",
                category="Dataset",
            ),
        log:
            f"{LOGS}/align_sheet/align_sheet.log",
        benchmark:
            f"{BENCHMARKS}/align_sheet/align_sheet.tsv"
        threads: res("align_sheet", "threads")
        resources:
            mem_mb=res("align_sheet", "mem_mb"),
            runtime=res("align_sheet", "runtime"),
        conda:
            ENV_TOMODATA
        shell:
            "tomo align-sheet {input.aligned:q} -o {output.sheet:q} > {log:q} 2>&1"

    add_targets(f"{RESULTS}/aligned_sheet.png")


rule cube:
    input:
        unpack(cube_input),
    output:
        cube=f"{RESOURCES}/cubes/{{id}}.npz",
    params:
        row=cube_row,
        source=cube_source_arg,
        options=cube_options,
    log:
        f"{LOGS}/cube/{{id}}.log",
    benchmark:
        f"{BENCHMARKS}/cube/{{id}}.tsv"
    threads: res("cube", "threads")
    resources:
        mem_mb=res("cube", "mem_mb"),
        runtime=res("cube", "runtime"),
    conda:
        ENV_TOMODATA
    shell:
        "tomo cube {params.source} -o {output.cube:q} --id {wildcards.id}"
        " {params.options} > {log:q} 2>&1"


rule store_settings:
    output:
        settings=f"{RESULTS}/dataset.settings.json",
    params:
        settings=dataset_options(),
    log:
        f"{LOGS}/store_settings/store_settings.log",
    benchmark:
        f"{BENCHMARKS}/store_settings/store_settings.tsv"
    threads: res("store_settings", "threads")
    resources:
        mem_mb=res("store_settings", "mem_mb"),
        runtime=res("store_settings", "runtime"),
    conda:
        ENV_TOMODATA
    shell:
        "tomo store-settings -o {output.settings:q} {params.settings} > {log:q} 2>&1"


rule store_create:
    input:
        settings=f"{RESULTS}/dataset.settings.json",
        cubes=expand(f"{RESOURCES}/cubes/{{id}}.npz", id=IDS),
    output:
        created=CREATED,
    params:
        store=STORE,
        settings=dataset_options(),
        table=species_table(),
        manifests=manifest_args(),
        config=config_json(),
    log:
        f"{LOGS}/store_create/store_create.log",
    benchmark:
        f"{BENCHMARKS}/store_create/store_create.tsv"
    threads: res("store_create", "threads")
    resources:
        mem_mb=res("store_create", "mem_mb"),
        runtime=res("store_create", "runtime"),
    conda:
        ENV_TOMODATA
    shell:
        "tomo store-create {params.store:q} --manifest {params.manifests} --cubes {input.cubes:q}"
        " {params.settings} --config-json {params.config} --update --done {output.created:q} > {log:q} 2>&1"


rule render_species:
    input:
        cube=f"{RESOURCES}/cubes/{{id}}.npz",
        settings=f"{RESULTS}/dataset.settings.json",
        created=ancient(CREATED),
    output:
        # no previews: the previews rule declares and writes the sheets (a sheet declared here, deleted,
        # re-ran this job and every job after it: finalize, train, evaluate, ...)
        done=SPECIES_DONE,
    params:
        store=STORE,
        # "-": no previews here (`--previews -`), the previews rule writes them from the store; they were
        # written twice, and Snakemake warned on every run that the previews job's outputs already existed.
        # Still a function of the output: Snakemake leaves parameters derived from outputs out of its params
        # trigger, so no existing render job re-runs (the shell text is unchanged too)
        previews=lambda wildcards, output: "-",
        options=render_options(),
    log:
        f"{LOGS}/render_species/{{id}}.log",
    benchmark:
        f"{BENCHMARKS}/render_species/{{id}}.tsv"
    threads: res("render_species", "threads")
    resources:
        mem_mb=res("render_species", "mem_mb"),
        runtime=res("render_species", "runtime"),
        gpu=GPU_RENDER,
    conda:
        ENV_RENDER
    shell:
        "NUMBA_NUM_THREADS={threads} tomo render-species {params.store:q} --cube {input.cube:q}"
        " --name {wildcards.id} {params.options} --previews {params.previews:q} --done {output.done:q}"
        " > {log:q} 2>&1"


rule previews:
    input:
        done=expand(SPECIES_DONE, id=IDS),
    output:
        # a list, not named outputs: a species id may be a name Snakemake reserves (index, count, ...)
        [
            report(
                f"{PREVIEWS_DIR}/{sid}_sheet.png",
                caption="../report/previews.rst",
                category="Previews",
                subcategory=SPLITS[sid],
                labels={"species": sid, "split": SPLITS[sid]},
            )
            for sid in IDS
        ],
    params:
        store=STORE,
        out=lambda wildcards, output: os.path.dirname(output[0]),
        species=" ".join(IDS),  # manifest ids: [A-Za-z0-9_.-], no quoting needed (tomodata.manifest)
    log:
        f"{LOGS}/previews/previews.log",
    benchmark:
        f"{BENCHMARKS}/previews/previews.tsv"
    threads: res("previews", "threads")
    resources:
        mem_mb=res("previews", "mem_mb"),
        runtime=res("previews", "runtime"),
    conda:
        ENV_TOMODATA
    shell:
        "tomo previews {params.store:q} --species {params.species} -o {params.out:q} > {log:q} 2>&1"


rule store_finalize:
    input:
        created=CREATED,
        done=expand(SPECIES_DONE, id=IDS),
    output:
        final=report(
            FINAL,
            caption="../report/dataset.rst",
            category="Dataset",
        ),
    params:
        store=STORE,
    log:
        f"{LOGS}/store_finalize/store_finalize.log",
    benchmark:
        f"{BENCHMARKS}/store_finalize/store_finalize.tsv"
    threads: res("store_finalize", "threads")
    resources:
        mem_mb=res("store_finalize", "mem_mb"),
        runtime=res("store_finalize", "runtime"),
    conda:
        ENV_TOMODATA
    shell:
        "tomo finalize {params.store:q} --done {output.final:q} > {log:q} 2>&1"


add_targets(FINAL, *[f"{PREVIEWS_DIR}/{sid}_sheet.png" for sid in IDS])
