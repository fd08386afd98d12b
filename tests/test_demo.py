"""`imagesync demo` is the newcomer's proof: it must keep telling the truth."""

from typer.testing import CliRunner

from imagesync.cli import app as cli


def test_demo_runs_traedes_example_and_fetches_nothing_twice() -> None:
    result = CliRunner().invoke(cli, ["demo"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "4 images created, 4 downloaded" in result.output
    assert "downloaded again: 0 (image server requests: 0)" in result.output
    assert "cool-product-001-100-XS" in result.output
    assert "demo passed" in result.output
