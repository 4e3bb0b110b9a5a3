"""Benchmarks: ``tomo bench render|cube|rules`` and those the model adds (``benches`` of
:func:`tomodata.cli.register`)."""

from __future__ import annotations


def cmd_bench(a) -> int:
    """``tomo bench WHAT``: the machine, then the benchmark's table (or a model benchmark's own output)."""
    import numba

    from ..bench import bench_render, format_rows, machine_summary

    if a.threads:
        numba.set_num_threads(a.threads)
    print(machine_summary())
    extra = getattr(a, "bench_handlers", None) or {}
    if a.what in extra:
        return extra[a.what][1](a)
    if a.what == "rules":
        from ..bench import format_rule_rows, rule_benchmarks, suggest_resources

        if not a.run:
            raise ValueError("tomo bench rules needs --run (the run name: results/RUN, benchmarks/RUN)")
        rows = rule_benchmarks(a.workdir, a.run)
        print(format_rule_rows(rows))
        print("\nrequests with a margin of 1.5 (config `resources:`):")
        for rule, req in suggest_resources(rows).items():
            print(f"  {rule + ':':16} {{mem_mb: {req['mem_mb']}, runtime: {req['runtime']}}}")
        return 0
    if a.what == "dataset":
        from ..bench_dataset import bench_dataset, format_dataset_rows

        backend = (a.backend or ["cuda"])[-1]
        rows = bench_dataset(
            a.out,
            species=a.species,
            backend=backend,
            workers=a.workers,
            batch=a.render_batch,
            max_seconds=a.max_seconds,
        )
        print(format_dataset_rows(rows, a.species))
        return 0
    if a.what == "cube":
        from ..resample import bench_to_cube

        r = bench_to_cube(shape=tuple(a.cube_shape), size=a.volume_size, repeats=a.repeats)
        print(
            f"to_cube uint8 {'×'.join(map(str, r['shape']))} → {r['size']}³: {r['seconds']:.2f} s (best of {a.repeats})"
        )
        return 0
    rows = bench_render(
        volume=a.volume,
        n_views=a.views,
        image_size=a.size,
        steps=a.steps,
        volume_size=a.volume_size,
        repeats=a.repeats,
        backends=a.backend or None,
    )
    print(format_rows(rows))
    return 0
