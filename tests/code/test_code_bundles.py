"""Each step's code bundle holds what its script runs, so an edit changes only the steps that run it."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipelines.code_bundle import (
    CONTAINER_PACKAGES,
    ENTRY_SCRIPTS,
    PROCESSING_ENTRYPOINT,
    REQUIREMENTS_OF,
    CodeBundle,
    StepBundle,
    data_files,
)
from pipelines.import_graph import imported_names, module_files, module_name, project_modules
from pipelines.local.s3 import LocalS3Client

REPO = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "robocar-data-123456789012", "robocar"
STEP_SCRIPTS = {
    "Preprocess": "processing/preprocess.py",
    "Train": "training/train.py",
    "Evaluate": "processing/evaluate.py",
    "CompileForEdge": "processing/compile.py",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the container packages, to edit."""
    for package in CONTAINER_PACKAGES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", ".*")
        )
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))


def uris(root: Path) -> dict[str, str]:
    code = CodeBundle(BUCKET, PREFIX, root=root)
    return {step: code.step(script).uri for step, script in STEP_SCRIPTS.items()}


def steps_holding(root: Path, relative: str) -> set[str]:
    code = CodeBundle(BUCKET, PREFIX, root=root)
    return {step for step, script in STEP_SCRIPTS.items() if relative in code.step(script).files}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {step for step in before if before[step] != after[step]}


def test_the_copy_bundles_like_the_repository(tree: Path) -> None:
    assert uris(tree) == uris(REPO)
    assert len(set(uris(REPO).values())) == 4  # four steps, four different bundles


def test_a_help_text_of_the_car_cli_reruns_no_step_that_does_not_run_it(tree: Path) -> None:
    before = uris(tree)
    edit(tree / "edge" / "cli.py", 'help="stop after N frames"', 'help="stop after N camera frames"')
    edit(tree / "edge" / "settings.py", '"AWS region"', '"the AWS region the registry is in"')
    assert changed(before, uris(tree)) == set()
    assert steps_holding(tree, "edge/cli.py") == set()  # the car's CLI runs in no step
    assert steps_holding(tree, "edge/settings.py") == set()  # nor does the CLIs' settings table


def test_an_edit_to_the_model_reruns_train_and_not_preprocess(tree: Path) -> None:
    before = uris(tree)
    edit(tree / "training" / "model.py", 'activation="linear", name=f"n_outputs{i}"',
         'activation="tanh", name=f"n_outputs{i}"')  # fmt: skip
    after = uris(tree)
    assert changed(before, after) == steps_holding(tree, "training/model.py")
    assert "Train" in changed(before, after) and "Preprocess" not in changed(before, after)


def test_an_edit_to_the_shared_frames_reruns_every_step_that_uses_them(tree: Path) -> None:
    before = uris(tree)
    edit(
        tree / "edge" / "frames.py",
        "from __future__ import annotations",
        "from __future__ import annotations\n",
    )
    assert changed(before, uris(tree)) == set(STEP_SCRIPTS)


def test_each_bundle_holds_what_its_script_imports() -> None:
    code = CodeBundle(BUCKET, PREFIX)
    preprocess = code.step("processing/preprocess.py").files
    assert {"processing/preprocess.py", "processing/tubs.py", "edge/frames.py", "edge/__init__.py"} <= set(
        preprocess
    )
    assert "processing/tub_v2_record.schema.json" in preprocess  # data beside records.py, read by path
    assert not {"training/train.py", "training/model.py", "processing/compile.py"} & set(preprocess)
    compile_ = code.step("processing/compile.py").files
    assert {"processing/neo.py", "processing/neo_targets.json", "edge/runtimes.py"} <= set(compile_)
    train = code.step("training/train.py").files
    # export.py copies the serving handler into the model: named by module, so the walk finds it.
    assert {"training/model.py", "inference/inference.py", "inference/requirements.txt"} <= set(train)
    assert "processing/preprocess.py" not in train
    for bundle in code.steps.values():
        assert not any(name.startswith(("pipelines/", "tests/", "steps/")) for name in bundle.files)
        assert not any("__pycache__" in name for name in bundle.files)


def test_each_container_gets_its_contract_files() -> None:
    code = CodeBundle(BUCKET, PREFIX)
    for script, layout in ENTRY_SCRIPTS.items():
        files = code.step(script).files
        if layout == "processing":
            assert {PROCESSING_ENTRYPOINT, "processing/requirements.txt", script} <= set(files)
    train = code.step("training/train.py")
    with tarfile.open(fileobj=io.BytesIO(train.sourcedir)) as tar:
        names = set(tar.getnames())
        assert (
            tar.extractfile("requirements.txt").read()
            == (REPO / "training" / "requirements.txt").read_bytes()
        )
    assert names == set(train.files) | {"requirements.txt"}
    assert train.sourcedir == CodeBundle(BUCKET, PREFIX).step("training/train.py").sourcedir  # stable bytes
    with pytest.raises(ValueError, match="takes no source directory"):
        _ = code.step("processing/evaluate.py").sourcedir
    with pytest.raises(ValueError, match="not a step's entry script"):
        code.step("edge/cli.py")


def test_the_walk_follows_every_kind_of_reference(tmp_path: Path) -> None:
    """Function-level, optional (try/except ImportError), relative and string references; no more."""
    files = {
        "app/__init__.py": "",
        "app/main.py": (
            "import json\n"
            "from app import eager\n"
            "def run():\n    from app.lazy import go\n    return go()\n"
            "try:\n    import lib.fast as fast\nexcept ImportError:\n    fast = None\n"
            "ASSETS = ('lib.assets', 'frame.jpg')\n"
        ),
        "app/eager.py": "from . import sibling\nfrom .sub.deep import x\n",
        "app/sibling.py": "",
        "app/sub/__init__.py": "",
        "app/sub/deep.py": "x = 1\n",
        "app/lazy.py": "def go():\n    return 1\n",
        "app/unused.py": "import lib.never\n",
        "app/schema.json": "{}",
        "lib/__init__.py": "",
        "lib/fast.py": "",
        "lib/never.py": "",
        "lib/assets/__init__.py": "",
        "lib/assets/frame.jpg": "jpeg",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = project_modules(tmp_path / "app" / "main.py", tmp_path, ("app", "lib"))
    names = {p.relative_to(tmp_path.resolve()).as_posix() for p in found}
    assert names == {
        "app/__init__.py", "app/main.py", "app/eager.py", "app/sibling.py", "app/sub/__init__.py",
        "app/sub/deep.py", "app/lazy.py", "lib/__init__.py", "lib/fast.py", "lib/assets/__init__.py",
    }  # fmt: skip
    required = project_modules(tmp_path / "app" / "main.py", tmp_path, ("app", "lib"), optional=False)
    assert tmp_path.resolve() / "lib" / "fast.py" not in required
    assert "lib.fast" not in imported_names(tmp_path / "app" / "main.py", optional=False)
    assert [p.name for p in data_files(tmp_path / "lib" / "assets" / "__init__.py")] == ["frame.jpg"]
    assert [p.name for p in data_files(tmp_path / "app" / "main.py")] == ["schema.json"]
    assert module_files("app.sub.deep.x", tmp_path) == [
        tmp_path / "app" / "__init__.py", tmp_path / "app" / "sub" / "__init__.py",
        tmp_path / "app" / "sub" / "deep.py",
    ]  # fmt: skip


def test_caches_and_editor_files_beside_the_modules_change_nothing(tree: Path) -> None:
    before = uris(tree)
    (tree / "processing" / "__pycache__").mkdir(exist_ok=True)
    (tree / "processing" / "__pycache__" / "tubs.cpython-311.pyc").write_bytes(b"\0")
    (tree / "processing" / ".tubs.py.swp").write_bytes(b"\0")
    (tree / "processing" / "tubs.py.orig").write_bytes(b"\0")
    assert uris(tree) == before
    (tree / "processing" / "new_table.json").write_text("{}")  # data beside processing modules
    assert changed(before, uris(tree)) == steps_holding(tree, "processing/new_table.json") != set()


def fake_definition(*bundles: StepBundle) -> str:
    return json.dumps({"Steps": [{"Name": b.script, "Code": b.uri} for b in bundles]})


def test_upload_puts_each_named_bundle_once(tmp_path: Path) -> None:
    s3 = LocalS3Client(tmp_path)
    s3.create_bucket(Bucket=BUCKET)
    code = CodeBundle(BUCKET, PREFIX)
    preprocess, train = code.step("processing/preprocess.py"), code.step("training/train.py")
    assert code.upload(s3, fake_definition(preprocess)) == len(preprocess.files)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {f"{preprocess.key_prefix}/{name}" for name in preprocess.files}  # only what is named
    assert code.upload(s3, fake_definition(preprocess, train)) == 1  # the sourcedir; preprocess is there
    body = s3.get_object(Bucket=BUCKET, Key=f"{train.key_prefix}/sourcedir.tar.gz")["Body"].read()
    assert body == train.sourcedir and train.uri.endswith(f"{train.key_prefix}/sourcedir.tar.gz")
    assert code.upload(s3, fake_definition(preprocess, train)) == 0
    assert code.upload(s3, json.dumps({"Steps": []})) == 0  # a definition with other code (the sample)


def test_a_half_uploaded_bundle_is_completed(tmp_path: Path) -> None:
    """The entrypoint goes last: without it the bundle counts as absent and is written again."""
    s3 = LocalS3Client(tmp_path)
    s3.create_bucket(Bucket=BUCKET)
    evaluate = CodeBundle(BUCKET, PREFIX).step("processing/evaluate.py")
    s3.put_object(Bucket=BUCKET, Key=f"{evaluate.key_prefix}/processing/evaluate.py", Body=b"partial")
    assert evaluate.upload(s3) == len(evaluate.files)
    got = s3.get_object(Bucket=BUCKET, Key=f"{evaluate.key_prefix}/processing/evaluate.py")["Body"].read()
    assert got == evaluate.files["processing/evaluate.py"]


def test_an_s3_error_other_than_a_missing_key_is_raised(tmp_path: Path) -> None:
    s3 = LocalS3Client(tmp_path)  # no bucket: HeadObject answers NoSuchBucket, not a missing key
    with pytest.raises(Exception, match="NoSuchBucket|does not exist|404"):
        CodeBundle(BUCKET, PREFIX).step("processing/evaluate.py").upload(s3)


# Runs with only the bundle on the module path: the venv's editable install of this project must not
# supply what a bundle lacks. Prints, last, the file of every project module that was loaded.
ISOLATED = """
import importlib, json, runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
packages, what = json.loads(sys.argv[1]), sys.argv[2]
files = []
if what == "import":
    for name in json.loads(sys.argv[3]):
        importlib.import_module(name)
    if "training.export" in sys.modules:  # the files it copies into the model, found by module name
        files += [str(p) for p in sys.modules["training.export"].code_files().values()]
else:
    sys.argv = sys.argv[3:]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        assert exc.code in (None, 0), exc.code
ours = [m for n, m in sys.modules.items() if n.split(".")[0] in packages]
files += [m.__file__ for m in ours if getattr(m, "__file__", None)]
print(json.dumps(files))
"""


def extract(bundle: StepBundle, folder: Path) -> Path:
    if bundle.layout == "training":
        with tarfile.open(fileobj=io.BytesIO(bundle.sourcedir)) as tar:
            tar.extractall(folder, filter="data")
    else:
        for name, data in bundle.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    return folder.resolve()


def run_isolated(
    folder: Path, *args: str, workspace: Path, python: str = sys.executable
) -> tuple[str, list[str]]:
    """stdout and the project files the process loaded, run in ``folder`` with only it on the path, by
    ``python`` (the step's image's interpreter)."""
    env = {
        "PATH": "",
        "PYTHONPATH": str(folder),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "ROBOCAR_LOCAL_ROOT": str(workspace),
    }
    run = subprocess.run(
        [python, "-c", ISOLATED, json.dumps(CONTAINER_PACKAGES), *args], cwd=folder, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    *out, last = run.stdout.splitlines()
    return "\n".join(out), json.loads(last)


@pytest.mark.parametrize("script", sorted(ENTRY_SCRIPTS))
def test_a_bundle_alone_is_enough_for_its_step(
    script: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every module of a bundle imports from the bundle and its image's environment only (the MXNet
    scripts: the MXNet environment), and so does the step's command."""
    bundle = CodeBundle(BUCKET, PREFIX).step(script)
    python = request.getfixturevalue("mxnet_python") if script in REQUIREMENTS_OF else sys.executable
    folder = extract(bundle, tmp_path / "code")
    modules = [module_name(folder / name, folder) for name in sorted(bundle.files) if name.endswith(".py")]
    _, loaded = run_isolated(folder, "import", json.dumps(modules), workspace=tmp_path, python=python)
    if bundle.layout == "processing":  # the step's own command line, through the bootstrap
        usage, more = run_isolated(
            folder, "run", PROCESSING_ENTRYPOINT, script, "--help", workspace=tmp_path, python=python
        )
        assert f"usage: {Path(script).name}" in usage
        loaded += more
    assert len(loaded) >= len(modules)
    for path in loaded:
        assert Path(path).resolve().is_relative_to(folder) and Path(path).is_file(), path
