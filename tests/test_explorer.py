"""``tomo explorer``: the static web page of held-out samples, checked in headless Chromium.

A tiny store, a 2-step network and a 4-sample evaluation (as tests/test_cli.py builds them); the
page is opened from file:// and driven with Selenium: every sample loads, the canvases are not
blank, an orbit and a clip plane change the pixels, the anaglyph is red/cyan, the x-ray re-rendered
in JavaScript at the front view equals 1 − exp(−χ · mean over depth) of the embedded volume, nothing
is requested from the network and the console has no errors. Without chromium, chromedriver or
selenium the browser tests skip (with TOMO_REQUIRE_CHROMIUM=1, as in .ci/run, they fail instead).
"""

import base64
import gzip
import json
import os
import re
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from tiny_runs import TINY_NET, build_demo, train_args

from model.cli import main
from model.examples import qualitative_examples
from model.explorer import LABELS, _copy_assets, _js, nifti_base64
from tomodata.folder_contents import contents_problem

#: Chromium's WebGL without a GPU: ANGLE on SwiftShader (software)
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--window-size=1400,900",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """results/RUN-like folder: dataset.zarr, model/best.pt, eval/ (4 held-out samples, 16³ grid)."""
    root = tmp_path_factory.mktemp("explorer")
    build_demo(root, species=4, val=1, test=1, views=4)
    store = str(root / "dataset.zarr")
    assert (
        main(
            [
                "train",
                store,
                "-o",
                str(root / "model"),
                *TINY_NET,
                *train_args(),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                store,
                "--checkpoint",
                str(root / "model" / "best.pt"),
                "-o",
                str(root / "eval"),
                "--max-samples",
                "4",
                "--nn-search",
                "brute",
            ]
        )
        == 0
    )
    return root


@pytest.fixture(scope="module")
def page(run):
    """The explorer of ``run`` with volumes downsampled to 12³ (the note is on the page)."""
    assert main(["explorer", str(run), "--max-size", "12", "--sheet", str(run / "explorer_samples.png")]) == 0
    return run / "explorer"


def _sample_volumes(page: Path, k: int) -> dict:
    text = (page / "samples" / f"s{k:03d}.js").read_text()
    return json.loads(re.search(r"window\.EXPLORER_DATA\[\d+\] = (\{.*\});", text).group(1))["volumes"]


def _nifti(b64: str):
    raw = base64.b64decode(b64)
    return nib.Nifti1Image.from_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


def test_writes_the_page(page, capsys):
    names = {p.name for p in page.iterdir()}
    assert {
        "index.html",
        "explorer.js",
        "explorer.css",
        "niivue.umd.js",
        "LICENSE-niivue.txt",
        "manifest.js",
        "samples",
        ".contents.json",  # written last: the workflow re-runs the job where a file is gone
    } <= names
    assert contents_problem(page) is None
    manifest = json.loads((page / "manifest.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    assert len(manifest["samples"]) == 4 and manifest["n_evaluated"] == 4  # 24 asked, 4 evaluated
    assert manifest["grid"] == [16, 16, 16] and manifest["shown"] == [12, 12, 12]
    assert "downsampled" in manifest["note"] and manifest["chi"] == 10.0
    vols = _sample_volumes(page, 0)
    assert sorted(vols) == ["nn", "oracle", "ours", "truth"]
    img = _nifti(vols["truth"])
    assert img.get_data_dtype() == np.uint8 and img.shape == (12, 12, 12)  # (columns, depth, rows)
    assert 0 < img.get_fdata().max() <= 1.0  # scl_slope: densities
    with Image.open(page.parent / "explorer_samples.png") as im:  # the report's entry: 4 x-rays in a row
        assert im.size == (4 * 100 + 4, 104)
    html = (page / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing from the network


def test_writes_the_page_licence_notices(page):
    """Every component bundled in niivue.umd.js (npm packages, the C libraries compiled into its three
    WebAssembly codecs) has its licence file in the written folder, as THIRD_PARTY.md lists them."""
    third_party = (page / "THIRD_PARTY.md").read_text()
    named = set(re.findall(r"LICENSE-[\w.-]+?\.txt", third_party))
    assert {"LICENSE-niivue.txt", "LICENSE-numcodecs.txt", "LICENSE-zarrita.txt"} <= named
    for name in sorted(named):
        assert (page / name).is_file() and (page / name).stat().st_size > 0, name
    assert {p.name for p in page.glob("LICENSE-*.txt")} == named  # none shipped without its row
    for component in ("numcodecs", "zarrita", "blosc", "lz4", "zstd"):
        assert component in third_party.lower(), component


def test_volumes_keep_the_view_geometry(run, tmp_path):
    """Not downsampled: the NIfTI holds ours as evaluated (quantised to 8 bits), in the page's axes."""
    out = tmp_path / "ex"
    assert main(["explorer", str(run), "-o", str(out), "--index", "2"]) == 0
    ours = qualitative_examples(run / "dataset.zarr", run / "model" / "best.pt", run / "eval", n=3)["rows"][2]["ours"]
    img = _nifti(_sample_volumes(out, 0)["ours"])
    arr = img.get_fdata()  # (x = columns, y = depth, z = rows reversed)
    back = arr[:, :, ::-1].transpose(1, 2, 0)  # (depth, rows, columns)
    vmax = max(1.0, float(ours.max()))
    np.testing.assert_allclose(back, ours, atol=vmax / 255 / 2 + 1e-6)
    assert np.allclose(np.diag(img.affine)[:3], [1.0, 1.0, 1.0])
    assert _manifest(out)["run"] == run.name  # the run form: the run folder's name


def _manifest(page: Path) -> dict:
    return json.loads((page / "manifest.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))


def test_the_run_name_of_a_relative_eval_folder(run, tmp_path, monkeypatch):
    """--eval given as a bare relative folder: the page names the folder that holds it (it was empty)."""
    monkeypatch.chdir(run)
    out = tmp_path / "ex"
    args = ["--store", "dataset.zarr", "--checkpoint", "model/best.pt", "--eval", "eval", "-o", str(out)]
    assert main(["explorer", *args, "--index", "0"]) == 0
    assert _manifest(out)["run"] == run.name


def test_bad_input(run, tmp_path, capsys):
    bare = tmp_path / "bare"
    (bare / "model").mkdir(parents=True)
    shutil.copy(run / "model" / "best.pt", bare / "model" / "best.pt")
    (bare / "dataset.zarr").symlink_to(run / "dataset.zarr")
    assert main(["explorer", str(bare)]) == 2
    err = capsys.readouterr().err
    assert f"no evaluation at {bare / 'eval'}" in err and "tomo evaluate" in err
    assert main(["explorer", str(run), "--index", "4"]) == 2
    assert "sample index 4 out of range: the evaluation has 4 samples (0..3)" in capsys.readouterr().err
    assert main(["explorer", str(run), "--max-size", "512", "-o", str(tmp_path / "big")]) == 2
    assert "volumes must be 8..128 voxels per axis in the browser" in capsys.readouterr().err
    assert not (tmp_path / "big").exists()
    assert main(["explorer", str(tmp_path / "nothing")]) == 2
    assert f"no dataset store at {tmp_path / 'nothing' / 'dataset.zarr'}" in capsys.readouterr().err
    assert main(["explorer"]) == 2
    assert "give a run folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- browser
def _browser():
    """A headless Chromium driven by Selenium, or a skip (a failure under TOMO_REQUIRE_CHROMIUM=1)."""
    chromium = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )
    driver = shutil.which("chromedriver")
    try:
        # Selenium (the [test] extra) may be absent: then a skip, or a failure under TOMO_REQUIRE_CHROMIUM=1
        from selenium import webdriver  # noqa: PLC0415
        from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    except ImportError:
        webdriver = None
    missing = [
        name
        for name, ok in (
            ("chromium", chromium),
            ("chromedriver", driver),
            ("selenium (pip install -e '.[test]')", webdriver),
        )
        if not ok
    ]
    if missing:
        why = f"no {', '.join(missing)} (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("TOMO_REQUIRE_CHROMIUM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})  # console; requests
    return webdriver.Chrome(options=opts, service=Service(driver))


@pytest.fixture(scope="module")
def browser():
    d = _browser()
    yield d
    d.quit()


def _wait(d, script: str, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = d.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    error = d.execute_script("return document.getElementById('error').textContent")
    raise AssertionError(f"timed out waiting for {script!r}; page error: {error!r}")


#: the WebGL canvas of one viewer, drawn and read back in the same task (grey levels, every 4th pixel)
PIXELS = """
const nv = explorer.viewers[arguments[0]].nv; nv.drawScene();
const c = document.createElement('canvas'); c.width = nv.canvas.width; c.height = nv.canvas.height;
const ctx = c.getContext('2d'); ctx.drawImage(nv.canvas, 0, 0);
const d = ctx.getImageData(0, 0, c.width, c.height).data, out = [];
for (let p = 0; p < d.length; p += 16) out.push(d[p] + d[p + 1] + d[p + 2]);
return out;
"""


def _pixels(d, method: str) -> np.ndarray:
    return np.asarray(d.execute_script(PIXELS, method), dtype=float)


def _requested(d) -> list[str]:
    """URLs the page requested since the last call (Chrome's performance log: Network events)."""
    events = (json.loads(e["message"])["message"] for e in d.get_log("performance"))
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


def _load(d, k: int) -> None:
    d.execute_script(f"explorer.load({k})")
    _wait(d, f"return document.body.dataset.loaded === '{k}'")


def test_page_in_chromium(page, browser):
    d = browser
    d.get((page / "index.html").as_uri())
    _wait(d, "return document.body.dataset.loaded === '0' || !document.getElementById('error').hidden")
    assert d.execute_script("return document.getElementById('error').hidden"), "the page reported an error"
    assert "downsampled" in d.find_element("id", "note").text
    assert len(d.find_elements("css selector", "#samples button")) == 4
    manifest = json.loads((page / "manifest.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    for k in range(4):  # every sample loads, each viewer shows something
        _load(d, k)
        assert d.execute_script("return document.getElementById('xray').naturalWidth") == 32  # the input PNG
        for m in ("ours", "truth", "nn", "oracle"):
            px = _pixels(d, m)
            assert px.max() > 60 and (px > 30).mean() > 0.005, f"sample {k}: {m} is blank"
        # the x-ray from the front view: 1 - exp(-chi * mean over depth) of the embedded volume
        d.execute_script("explorer.setView(0, 0)")
        js = np.asarray(
            d.execute_script("const v = explorer.viewers.truth.vol; return Array.from(explorer.xray(v, 0, 0).opacity)")
        ).reshape(12, 12)
        arr = _nifti(_sample_volumes(page, k)["truth"]).get_fdata()  # (columns, depth, rows rev)
        expect = 1 - np.exp(-manifest["chi"] * arr.mean(axis=1).T[::-1])  # rows down, columns right
        np.testing.assert_allclose(js, expect, atol=1e-4)

    _load(d, 0)
    d.execute_script("explorer.setView(30, 15)")
    before = _pixels(d, "truth")
    xray_before = d.execute_script("return Array.from(explorer.viewers.truth.xray)")
    d.execute_script("explorer.setView(120, 15)")  # orbit: the render and the re-rendered x-ray change
    after = _pixels(d, "truth")
    assert np.abs(after - before).mean() > 1.0
    # the x-rays follow on the next animation frame (waited for: a loaded machine draws late)
    changed = (
        "const a = explorer.viewers.truth.xray, b = arguments[0];return a.some((v, i) => Math.abs(v - b[i]) > 0.01);"
    )
    end = time.monotonic() + 30
    while not d.execute_script(changed, xray_before):
        assert time.monotonic() < end, "the x-ray did not follow the orbit within 30 s"
        time.sleep(0.05)
    assert d.execute_script("return explorer.viewers.nn.nv.scene.renderAzimuth") == 120  # all viewers follow

    d.find_element("id", "clip").click()  # clip plane through the centre
    clipped = _pixels(d, "truth")
    assert np.abs(clipped - after).mean() > 1.0
    depth = d.find_element("id", "clipDepth")  # its end: a corner of the volume (0.87 side lengths), shown
    d.execute_script("const s = arguments[0]; s.value = s.max; s.dispatchEvent(new Event('input'))", depth)
    assert d.execute_script("return document.querySelector('output[for=clipDepth]').value") == "0.87"
    d.find_element("id", "clip").click()
    # each method's metrics are the sample's own row of metrics.csv (a sample is one view)
    assert "(this sample" in d.execute_script("return explorer.viewers.ours.cell.querySelector('.metrics').textContent")

    d.find_element("css selector", "input[name=preset][value=colour]").click()
    rgb = d.execute_script(PIXELS.replace("d[p] + d[p + 1] + d[p + 2]", "[d[p], d[p + 1], d[p + 2]]"), "truth")
    rgb = np.asarray(rgb, dtype=float)
    assert (np.abs(rgb[:, 0] - rgb[:, 2]) > 30).mean() > 0.002  # a colour map, not grey

    d.find_element("id", "stereo").click()  # red-cyan anaglyph over the render
    ana = np.asarray(
        d.execute_script(
            "const c = explorer.viewers.truth.cell.querySelector('canvas.anaglyph'); if (c.hidden) return null;"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, out = [];"
            "for (let p = 0; p < d.length; p += 16) out.push([d[p], d[p + 1], d[p + 2]]); return out;"
        ),
        dtype=float,
    )
    assert ana.max() > 60
    assert np.array_equal(ana[:, 1], ana[:, 2]) and np.abs(ana[:, 0] - ana[:, 1]).max() > 20  # red ≠ cyan

    urls = _requested(d)
    assert any(u.endswith("/samples/s003.js") for u in urls) and any(u.endswith("niivue.umd.js") for u in urls)
    assert all(u.split(":", 1)[0] in ("file", "data", "blob") for u in urls), urls  # nothing from the network
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_missing_sample_file_is_reported(page, browser, tmp_path):
    copy = tmp_path / "page"
    shutil.copytree(page, copy)
    (copy / "samples" / "s001.js").unlink()
    browser.get((copy / "index.html").as_uri())
    _wait(browser, "return document.body.dataset.loaded === '0'")
    browser.execute_script("document.querySelectorAll('#samples button')[1].click()")
    text = _wait(browser, "const e = document.getElementById('error'); return !e.hidden && e.textContent")
    assert "samples/s001.js could not be loaded" in text and "tomo explorer" in text
    browser.get_log("browser")  # the expected error, drained


def _depth_page(out: Path) -> Path:
    """A page of one sample whose volumes (24 deep) hold a dim slab and a bright square, one at the
    front (depth 2-8, w < 0: nearest the viewer of the x-ray, docs/geometry.md) and one at the back
    (depth 16-22): ours and NN have the slab in front, truth and the Oracle the square."""
    n = 24

    def vol(slab, square):
        v = np.zeros((n, n, n), np.float32)
        v[slab[0] : slab[1], 4:20, 4:20] = 0.3
        v[square[0] : square[1], 9:15, 9:15] = 1.0
        return v

    front, back = (2, 8), (16, 22)
    vols = {"ours": vol(front, back), "truth": vol(back, front), "nn": vol(front, back), "oracle": vol(back, front)}
    (out / "samples").mkdir(parents=True)
    data = {m: nifti_base64(v, 1.0, 1.0, m) for m, v in vols.items()}
    head = "window.EXPLORER_DATA = window.EXPLORER_DATA || {};\n"
    (out / "samples/s000.js").write_text(head + _js("window.EXPLORER_DATA[0]", {"volumes": data}))
    Image.fromarray(np.full((n, n), 128, np.uint8)).save(out / "samples/s000_xray.png")
    sample = dict(title="depth", species="depth", sample=0, vmax=1.0, methods=list(vols), metrics={})
    sample |= dict(script="samples/s000.js", xray="samples/s000_xray.png")
    manifest = dict(run="depth", chi=10.0, grid=[n] * 3, shown=[n] * 3, note="", labels=LABELS, n_evaluated=1)
    (out / "manifest.js").write_text(_js("window.EXPLORER", manifest | {"samples": [sample]}))
    _copy_assets(out)
    return out


def _centre(d, method: str) -> float:
    """Mean grey level of the render's central 10 x 10 pixels."""
    script = PIXELS.replace("p += 16", "p += 4").replace("return out;", "return [c.width, c.height, out];")
    w, h, px = d.execute_script(script, method)
    a = np.asarray(px, float).reshape(h, w) / 3
    return float(a[h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5].mean())


def test_the_render_and_the_anaglyph_show_the_front_in_front(browser, tmp_path):
    """At the front view the render looks along the x-ray's rays from the front (w = -1): what lies at
    the front hides what lies behind it, and the anaglyph gives the front the crossed disparity of a near
    object (left eye's image to the right). Until session 33 the render showed the back in front,
    mirrored, and the anaglyph's depth disagreed with it (helper-73)."""
    d = browser
    d.get((_depth_page(tmp_path / "depth") / "index.html").as_uri())
    _wait(d, "return document.body.dataset.loaded === '0' || !document.getElementById('error').hidden")
    d.find_element("css selector", "input[name=preset][value=iso]").click()
    d.execute_script("explorer.setView(0, 0)")
    time.sleep(1)
    slab_in_front, square_in_front = _centre(d, "ours"), _centre(d, "truth")
    assert square_in_front > slab_in_front + 40, (slab_in_front, square_in_front)
    d.find_element("id", "stereo").click()
    rgba = d.execute_script(
        "const c = explorer.viewers.truth.cell.querySelector('canvas.anaglyph');"
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];"
    )
    w, h, px = rgba
    a = np.asarray(px, float).reshape(h, w, 4)
    red_x = np.nonzero(a[..., 0] > 200)[1].mean()  # the bright square in the left eye's view
    cyan_x = np.nonzero(a[..., 1] > 200)[1].mean()  # and in the right eye's
    assert red_x > cyan_x + 1, (red_x, cyan_x)  # crossed: the square, in front, looks near
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_quick_clicks_end_on_the_last_sample(page, browser):
    """Two samples clicked at once: every viewer ends on the last one (loads ran interleaved and left the
    viewers on different samples; helper-73)."""
    d = browser
    sums = {
        (m, int(np.asarray(_nifti(b64).dataobj.get_unscaled()).astype(np.int64).sum())): k  # the stored bytes
        for k in range(4)
        for m, b64 in _sample_volumes(page, k).items()
    }
    for order in ([2, 3], [1, 2, 3, 1]):
        d.get((page / "index.html").as_uri())
        _wait(d, "return document.body.dataset.loaded === '0'")
        clicks = "const b = document.querySelectorAll('#samples button'); for (const i of arguments[0]) b[i].click();"
        d.execute_script(clicks, order)
        _wait(d, f"return document.body.dataset.loaded === '{order[-1]}'")
        time.sleep(0.5)  # a stale load would finish after the last one
        got = d.execute_script(
            "return {index: explorer.state.index, nv: explorer.METHODS.map(m => "
            "explorer.viewers[m].nv.volumes.map(v => Array.from(v.img).reduce((a, b) => a + b, 0)))}"
        )
        assert got["index"] == order[-1]
        shown = [sums.get((m, round(s[0]))) for m, s in zip(("ours", "truth", "nn", "oracle"), got["nv"])]
        assert shown == [order[-1]] * 4, (order, shown)
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
