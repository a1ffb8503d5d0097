"""Runs tutorial pages' marked blocks in order, each page in a sandbox folder, as a reader would type them (see
blocks.py): `python tests/docs/tutorial_driver.py SANDBOX PAGE...`, started by test_tutorials.py with
METABENCH_HOME=SANDBOX so that stores, caches and reports land there. Every suite a command names runs shortened (SHORTER): a few meta-iterations,
tiny test episodes, one seed; the commands, files and options are the tutorial's own."""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import yaml

from blocks import ROOT, bench_arguments, blocks, command_lines

SHORTER = {
    "training": {"meta_iterations": 3, "meta_batch_size": 2, "query": 2, "validate_every": 2,
                 "validation_episodes": 2, "warmup_iterations": 1},
    "evaluation": {"test_episodes": 3, "query": 2, "warmup_episodes": 1},
    "search": {"n_trials": 2, "pruner_startup_trials": 1, "pruner_warmup_steps": 0},
}
SUITE_COMMANDS = ("run", "tune", "report")


def shortened(document: dict) -> dict:
    """A suite document made quick: SHORTER's values, the first seed alone, 8 filters in a Conv-4."""
    short = {**document}
    for section, values in SHORTER.items():
        if section in document or section != "search":
            short[section] = {**(document.get(section) or {}), **values}
    grid = dict(document.get("grid") or {})
    grid["seeds"] = list(grid.get("seeds") or [0])[:1]
    short["grid"] = grid
    short["backbone"] = {"filters": 8, **(document.get("backbone") or {})}
    return short


def suite_file(name: str) -> Path | None:
    """The suite file a command names: in the sandbox, else the repository's, else a shipped suite by name."""
    for candidate in (Path(name), ROOT / name, ROOT / "suites" / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def bench(arguments: list[str]) -> None:
    from bench.__main__ import main

    if arguments and arguments[0] in SUITE_COMMANDS:
        if len(arguments) < 2 or arguments[1].startswith("-"):
            raise SystemExit(f"write the suite right after `{arguments[0]}` in a tutorial: {arguments}")
        found = suite_file(arguments[1])
        if found is not None:
            documents = list(yaml.safe_load_all(found.read_text(encoding="utf-8")))
            short = Path("shortened") / found.name
            short.parent.mkdir(exist_ok=True)
            short.write_text(yaml.safe_dump_all([shortened(d) for d in documents if d]), encoding="utf-8")
            arguments = [arguments[0], str(short), *arguments[2:]]
    print(f"$ meta-bench {' '.join(arguments)}", flush=True)
    status = main(arguments)
    if status != 0:
        raise SystemExit(f"`meta-bench {' '.join(arguments)}` exited {status}")


def run_page(page: Path) -> None:
    for block in blocks(page.read_text(encoding="utf-8")):
        where = f"{page.name}:{block.line}"
        if block.title:
            Path(block.title).parent.mkdir(parents=True, exist_ok=True)
            Path(block.title).write_text(block.body + "\n", encoding="utf-8")
        if not block.run:
            continue
        if block.language == "python":
            print(f"$ python ({where})", flush=True)
            path = Path(block.title) if block.title else Path(f"block_{block.line}.py")
            path.write_text(block.body + "\n", encoding="utf-8")
            runpy.run_path(str(path), run_name="__main__")
            continue
        for line in command_lines(block.body):
            arguments = bench_arguments(line)
            if arguments is None:
                raise SystemExit(f"{where}: the tests run only meta-bench commands and Python, not {line!r}")
            bench(arguments)


def main(sandbox: Path, pages: list[Path]) -> None:
    """Each page in a folder of its own under ``sandbox``, one after the other in this process; a line
    ``TUTORIAL <page> ok`` or ``TUTORIAL <page> FAILED`` (after its traceback) ends each."""
    import traceback

    for page in pages:
        folder = sandbox / page.stem
        folder.mkdir()
        os.chdir(folder)
        sys.path.insert(0, str(folder))  # the reader's own packages (mypkg/) import from where they are written
        try:
            run_page(page)
        except BaseException:  # noqa: BLE001  (reported with its traceback, and the page fails)
            traceback.print_exc(file=sys.stdout)
            print(f"TUTORIAL {page.name} FAILED", flush=True)
            continue
        finally:
            sys.path.remove(str(folder))
        print(f"TUTORIAL {page.name} ok", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), [Path(page).resolve() for page in sys.argv[2:]])
