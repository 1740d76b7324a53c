"""The README's "Conformance" section is this suite's map: every test file
is in its table, and every test that says Hearth differs or goes further is
in its "Differences" list. (No server needed.)"""

import ast
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"
SUFFIX = re.compile(r"__(hearth_(?:differs|goes_further)\w*)$")


def section():
    text = README.read_text()
    m = re.search(r"^## Conformance.*?(?=^## )", text, re.S | re.M)
    assert m, "README.md has no '## Conformance' section"
    return m.group(0)


def suite_tests():
    for f in sorted(HERE.glob("test_*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield f.name, node.name


def test_every_test_file_is_in_the_readmes_table():
    text = section()
    files = {f.name for f in HERE.glob("test_*.py")} - {pathlib.Path(__file__).name}
    listed = set(re.findall(r"`(test_\w+\.py)`", text)) - {pathlib.Path(__file__).name}
    assert files - listed == set(), "test files missing from the README's table"
    assert listed - files == set(), "the README's table names files that do not exist"


def test_every_difference_is_in_the_readmes_list():
    text = section()
    named = [(f, n, SUFFIX.search(n).group(1)) for f, n in suite_tests() if SUFFIX.search(n)]
    assert named, "no test names a difference: the pattern or the suite changed"
    missing = [(f, n) for f, n, suffix in named if suffix not in text]
    assert missing == [], "differences missing from the README's list"
