"""A regular install runs the demo: the wheel carries the demo's configs and the sample generator."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from conftest import REPO_ROOT

from peterrec.commands.demo import DEMO_CONFIGS, DEMO_FINETUNE_CONFIG, DEMO_PRETRAIN_CONFIG, prepare_out
from peterrec.errors import CheckpointError

HUMAN_COPIES = {
    DEMO_PRETRAIN_CONFIG: REPO_ROOT / "configs" / "pretrain" / DEMO_PRETRAIN_CONFIG,
    DEMO_FINETUNE_CONFIG: REPO_ROOT / "configs" / "finetune" / DEMO_FINETUNE_CONFIG,
}


@pytest.mark.parametrize("name", sorted(HUMAN_COPIES))
def test_packaged_demo_configs_equal_the_repository_copies(name):
    assert (DEMO_CONFIGS / name).read_bytes() == HUMAN_COPIES[name].read_bytes()


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
    ]
    subprocess.run([*command, str(REPO_ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("peterrec-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_has_what_the_demo_needs(wheel_files):
    for name in HUMAN_COPIES:
        assert f"peterrec/resources/demo/{name}" in wheel_files
    for module in ("commands/demo.py", "data/synthetic.py", "commands/cli.py", "py.typed"):
        assert f"peterrec/{module}" in wheel_files
    assert any(name.endswith("licenses/LICENSE") for name in wheel_files)
    entry_points = next(name for name in wheel_files if name.endswith("entry_points.txt"))
    assert entry_points.startswith("peterrec-")


def test_wheel_leaves_out_tests_benchmarks_and_data(wheel_files):
    top = {name.split("/")[0] for name in wheel_files}
    assert all(t == "peterrec" or t.endswith(".dist-info") for t in top), top


def test_demo_replaces_only_its_own_folder(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(CheckpointError, match="was not made by `peterrec demo`"):
        prepare_out(precious)
    assert (precious / "thesis.tex").read_text() == "years of work"
    demo = tmp_path / "demo"
    prepare_out(demo)
    (demo / "old-run").mkdir()
    prepare_out(demo)  # an earlier demo's folder is replaced
    assert not (demo / "old-run").exists()


def test_version_option(cli):
    import peterrec

    result = cli("--version")
    assert result.exit_code == 0 and peterrec.__version__ in result.output
