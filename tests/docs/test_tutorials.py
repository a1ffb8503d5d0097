"""Every tutorial's marked commands run, shortened (tutorial_driver.py), so a tutorial cannot rot; and every
`meta-bench` command anywhere in the documentation parses with the real command line."""
import os
import subprocess
import sys

import pytest

from docs.tools.reference import cli_parser
from meta_bench.datasets.cache import CACHE_DIR
from tests.docs.blocks import ROOT, bench_arguments, blocks, command_lines, pages

TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
DRIVER = ROOT / "tests" / "docs" / "tutorial_driver.py"


def test_every_tutorial_has_commands_the_tests_run():
    assert TUTORIALS
    for page in TUTORIALS:
        assert any(block.run for block in blocks(page.read_text(encoding="utf-8"))), page.name


@pytest.fixture(scope="module")
def tutorial_logs(tmp_path_factory) -> dict[str, tuple[bool, str]]:
    """Every tutorial run once, in one process of their own (a tutorial's plugin joins that process's registries;
    one process pays the imports once) with METABENCH_HOME in a sandbox, so nothing lands in the checkout: page ->
    (passed, its log)."""
    sandbox = tmp_path_factory.mktemp("tutorials")
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    # the rendered datasets are the tests' own (glyphs rendered once); the autotuning cache is the session's (conftest)
    environment.update(METABENCH_HOME=str(sandbox), METABENCH_CACHE=str(CACHE_DIR))
    done = subprocess.run([sys.executable, str(DRIVER), str(sandbox), *map(str, TUTORIALS)], cwd=sandbox,
                          env=environment, capture_output=True, text=True, timeout=900)
    logs, lines = {}, []
    for line in done.stdout.splitlines():
        lines.append(line)
        if line.startswith("TUTORIAL "):
            _, name, verdict = line.split(" ", 2)
            logs[name] = (verdict == "ok", "\n".join(lines))
            lines = []
    logs["(after the last page)"] = (done.returncode == 0, "\n".join(lines) + done.stderr[-4000:])
    return logs


@pytest.mark.parametrize("page", TUTORIALS, ids=lambda page: page.stem)
def test_a_tutorials_commands_run(page, tutorial_logs):
    passed, log = tutorial_logs.get(page.name, (False, tutorial_logs["(after the last page)"][1]))
    assert passed, f"{page.name}:\n{log[-6000:]}"


def test_every_bench_command_in_the_documentation_parses():
    parser, checked = cli_parser(), 0
    for page in pages():
        for block in blocks(page.read_text(encoding="utf-8")):
            if block.language not in ("bash", "sh", "shell", "console"):
                continue
            for line in command_lines(block.body):
                arguments = bench_arguments(line)
                if arguments is None:
                    continue
                try:
                    parser.parse_args(arguments)
                except SystemExit:
                    pytest.fail(f"{page.relative_to(ROOT)}:{block.line}: {line!r} does not parse")
                checked += 1
    assert checked > 20
