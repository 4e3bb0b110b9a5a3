"""The conda environments in envs/ agree with pyproject.toml, and every rule's environment exists.

Every runtime dependency of pyproject.toml (and of its `gpu-cuda12` extra) must appear in some env file,
with the same version bounds, and every package of an env file must be a pyproject dependency or
a piece of conda infrastructure. Names are compared normalised (PEP 503: lower case, runs of -_.
as -) after the small PyPI -> conda-forge mapping below.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"

# PyPI name -> conda-forge (or bioconda) name, where they differ
PYPI_TO_CONDA = {
    "opencv-python-headless": "py-opencv",  # conda-forge's OpenCV Python bindings (headless builds)
    "torch": "pytorch",
    "cupy-cuda12x": "cupy",  # conda-forge builds CuPy per CUDA version, chosen by cuda-version
}
# conda packages that are not Python dependencies of the project
INFRASTRUCTURE = {"python", "pip", "cuda-version"}
# pyproject extras whose packages belong in the env files (test tools stay with pip)
EXTRAS_IN_ENVS = ("gpu-cuda12",)  # envs/tomodata-gpu.yaml: cupy with cuda-version 12.*


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(text: str) -> tuple[str, str]:
    """'zarr>=3.0.8,<3.2' or 'zarr >=3.0.8,<3.2' -> ('zarr', '<3.2,>=3.0.8') (bounds sorted)."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?\s*(.*)$", text)
    assert m, text
    spec = m.group(3).split(";")[0].replace(" ", "")
    return normalise(m.group(1)), ",".join(sorted(s for s in spec.split(",") if s))


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS_IN_ENVS:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    out = {}
    for r in reqs:
        name, spec = split_requirement(r)
        out[normalise(PYPI_TO_CONDA.get(name, name))] = spec
    return out


def env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def env_packages(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # a pip: section
            for pip_dep in dep.get("pip", []):
                name, spec = split_requirement(pip_dep)
                out[normalise(PYPI_TO_CONDA.get(name, name))] = spec
            continue
        text = str(dep).split("::")[-1]  # channel::package
        name, _, spec = text.partition(" ")
        if not spec:
            m = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", text)
            name, spec = m.group(1), m.group(2)
        out[normalise(name)] = ",".join(sorted(s for s in spec.replace(" ", "").split(",") if s))
    return out


def test_env_files_exist_and_parse():
    files = env_files()
    assert {p.stem for p in files} >= {"tomodata", "tomodata-gpu", "model", "workflow"}
    for path in files:
        env = yaml.safe_load(path.read_text())
        assert "conda-forge" in env["channels"], path.name
        assert any(str(d).split()[0] == "python" for d in env["dependencies"] if not isinstance(d, dict)), path.name


def test_every_pyproject_dependency_is_in_an_env_file():
    wanted = pyproject_requirements()
    found: dict[str, set[str]] = {}
    for path in env_files():
        for name, spec in env_packages(path).items():
            found.setdefault(name, set()).add(spec)
    missing = sorted(set(wanted) - set(found))
    assert not missing, f"pyproject dependencies in no env file: {missing}"
    differing = {n: (wanted[n], sorted(found[n])) for n in wanted if found[n] != {wanted[n]}}
    assert not differing, f"version bounds differ from pyproject.toml (pyproject, envs): {differing}"


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_every_env_package_is_a_pyproject_dependency(path):
    wanted = pyproject_requirements()
    extra = sorted(set(env_packages(path)) - set(wanted) - INFRASTRUCTURE)
    assert not extra, f"{path.name}: packages that pyproject.toml does not list: {extra}"


def test_rule_environments_exist_with_post_deploy_scripts():
    """Every conda env a rule file names exists; rule envs install the project after deployment."""
    named = set()
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        named |= set(re.findall(r"\"\.\./\.\./(envs/[A-Za-z0-9_.-]+\.yaml)\"", smk.read_text()))
    assert named >= {"envs/tomodata.yaml", "envs/tomodata-gpu.yaml"}
    for rel in named | {"envs/model.yaml"}:
        env = ROOT / rel
        assert env.is_file(), rel
        script = env.with_name(env.stem + ".post-deploy.sh")
        assert script.is_file() and "pip install --no-deps" in script.read_text(), script.name


def test_mapping_is_small_and_used():
    names = {
        split_requirement(r)[0] for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in EXTRAS_IN_ENVS:
        names |= {split_requirement(r)[0] for r in project["optional-dependencies"][extra]}
    assert set(PYPI_TO_CONDA) <= names, "a mapping entry for a package pyproject.toml no longer lists"


# import name -> conda package, where they differ; packages that come with a listed one (transitive)
IMPORT_TO_CONDA = {"cv2": "py-opencv", "yaml": "pyyaml", "skimage": "scikit-image", "nrrd": "pynrrd", "PIL": "pillow"}
CARRIED_BY = {
    "google_crc32c": "zarr",  # zarr 3's shard-index checksum (a zarr requirement)
    "referencing": "jsonschema",  # jsonschema's schema registry (a jsonschema requirement)
    "urllib3": "requests",  # requests' transport (a requests requirement)
}


def _third_party_imports(package: Path) -> dict[str, set[str]]:
    """import name -> modules of ``package`` importing it anywhere (function-local imports too)."""
    out: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            for name in names:
                if name not in sys.stdlib_module_names and name != package.name:
                    out.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    return out


def test_the_data_rules_environment_has_every_package_tomodata_imports():
    """The data rules run `tomo` in envs/tomodata.yaml (CuPy only in envs/tomodata-gpu.yaml): every
    package any tomodata module imports must be there (helper-79: the claim that the data commands run
    without the model's packages was tested by nothing; tests/test_workflow.py's demo build runs them
    with those packages unimportable)."""
    have = set(env_packages(ENVS / "tomodata.yaml"))
    gpu = set(env_packages(ENVS / "tomodata-gpu.yaml"))
    missing = {}
    for name, where in _third_party_imports(ROOT / "tomodata").items():
        conda = normalise(IMPORT_TO_CONDA.get(name, CARRIED_BY.get(name, name)))
        if name in ("cupy", "cupyx"):
            ok = "cupy" in gpu
        else:
            ok = conda in have
        if not ok:
            missing[name] = sorted(where)
    assert not missing, f"packages tomodata imports that envs/tomodata.yaml lacks: {missing}"
