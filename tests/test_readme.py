"""The README's guarantees table names tests that exist (so the table stays true)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_named_in_the_guarantees_table_exists():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    named = 0
    for row in table.splitlines():
        current_file = None
        for ref in re.findall(r"`([\w/.]*test_\w+\.py)?(::(\w+))?`", row):
            path, _, test = ref
            if path:
                current_file = path
                assert (ROOT / "tests" / path).exists(), path
            if test:
                assert current_file, f"{test} names no file"
                source = (ROOT / "tests" / current_file).read_text()
                assert re.search(rf"def {test}\(", source), f"{current_file}::{test}"
                named += 1
    assert named >= 15
