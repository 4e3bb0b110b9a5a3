"""Per-rule cost of a workflow run from Snakemake's benchmark files (tomo bench rules), the source of
the resource requests in the configs (issue #14, cluster hygiene)."""

import pytest

from model.cli import main
from tomodata.bench import rule_benchmarks, suggest_resources

HEAD = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(root, rule, job, s, rss, cpu):
    d = root / "benchmarks" / "r" / rule
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{job}.tsv").write_text(HEAD + f"{s}\t0:00:{int(s):02d}\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def test_rule_benchmarks_and_requests(tmp_path, capsys):
    _bench(tmp_path, "render_species", "a", 20.0, 810.0, 18.0)
    _bench(tmp_path, "render_species", "b", 16.5, 700.0, 15.0)
    _bench(tmp_path, "train", "train", 138.0, 3737.0, 133.0)
    rows = {r["rule"]: r for r in rule_benchmarks(tmp_path, "r")}
    assert rows["render_species"]["jobs"] == 2 and rows["render_species"]["max_s"] == 20.0
    assert rows["render_species"]["total_s"] == pytest.approx(36.5) and rows["render_species"]["max_rss_mb"] == 810.0
    req = suggest_resources(list(rows.values()))
    assert req["render_species"] == {"mem_mb": 1300, "runtime": 5} and req["train"] == {"mem_mb": 5700, "runtime": 5}
    assert main(["bench", "rules", "--workdir", str(tmp_path), "--run", "r"]) == 0
    assert "| train | 1 | 138 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no Snakemake benchmark files"):
        rule_benchmarks(tmp_path, "other")
