"""`imagesync demo` is the newcomer's proof: it must keep telling the truth."""

from pathlib import Path

from typer.testing import CliRunner

from imagesync.cli import app as cli


def test_demo_runs_traedes_example_and_fetches_nothing_twice() -> None:
    result = CliRunner().invoke(cli, ["demo"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "4 images created, 4 downloaded" in result.output
    assert "downloaded again: 0 (image server requests: 0)" in result.output
    assert "cool-product-001-100-XS" in result.output
    assert "demo passed" in result.output


def test_demo_says_its_temporary_data_is_gone_or_keeps_it_where_asked(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo"], env={"COLUMNS": "120"})
    [intro] = [line for line in result.output.splitlines() if line.startswith("imagesync demo")]
    assert "data in a temporary folder, deleted at the end" in intro
    assert "imagesync-demo-" not in intro  # no folder that is gone by the end
    kept = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--keep", str(kept)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert (kept / "imagesync.db").is_file()
    assert any((kept / "files").rglob("*.*"))
    assert f"The demo's database and files are in {kept}" in " ".join(result.output.split())
