"""The README's commands and example stay true."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_readme_opens_with_the_two_setup_commands():
    first = README.split("```")[1]
    lines = [line for line in first.splitlines()[1:] if line.strip()]
    assert len(lines) == 2
    assert "pip install ." in lines[0] and "coreai-opt palettize --example" in lines[0]
    assert "pip install -e '.[test]'" in lines[1] and "pytest" in lines[1]


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "sed -n 2p" in script and "README.md" in script and "rm -rf .venv" in script


def test_the_first_command_runs_the_main_job_on_the_example(tmp_path):
    out = tmp_path / "small-4bit.aimodel"
    done = subprocess.run([sys.executable, "-m", "coreai_opt", "palettize", "--example", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "palettized 4-bit" in done.stdout and (out / "main.mlirb").is_file()


def test_the_python_example_runs(tmp_path, monkeypatch):
    (block,) = [b for b in _blocks("python") if "palettize_weights" in b]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.replace("/tmp/", f"{tmp_path}/"), "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "small-g16-int8lut.aimodel" / "main.mlirb").is_file()
    assert namespace["reports"][0].compressed


def test_every_cli_option_in_the_readme_exists():
    from coreai_opt.cli import build_parser

    parser = build_parser()
    (usage,) = [b for b in _blocks("sh") if "coreai-opt palettize IN.aimodel" in b]
    for command in ("palettize", "sparsify", "inspect", "compare"):
        subparser = next(a for a in parser._actions if a.dest == "command").choices[command]  # noqa: SLF001
        known = {option for action in subparser._actions for option in action.option_strings}  # noqa: SLF001
        assert "--example" in known, f"the README says every command reads --example; {command} does not"
        section = usage.split(f"coreai-opt {command} ")[1].split("coreai-opt ")[0]
        for option in re.findall(r"(--[a-z][a-z-]+)", section):
            assert option in known, f"{command} {option}"


def test_the_reference_page_lists_every_cli_option():
    from coreai_opt.cli import build_parser

    reference = (ROOT / "docs" / "reference.md").read_text()
    parser = build_parser()
    for command, subparser in next(a for a in parser._actions if a.dest == "command").choices.items():  # noqa: SLF001
        for action in subparser._actions:  # noqa: SLF001
            long_options = [o for o in action.option_strings if o.startswith("--") and o not in ("--help", "--output")]
            for option in long_options:
                assert f"`{option}`" in reference, f"{command} {option} missing from docs/reference.md"
