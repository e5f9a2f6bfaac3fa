"""The shipped data files are exactly the documented ones."""

import hashlib
import re

from tests.conftest import DATA


def test_every_shipped_file_matches_its_documented_sha256():
    readme = (DATA / "README.md").read_text()
    listed = re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, flags=re.M)
    assert len(listed) == 7
    for digest, rel in listed:
        assert hashlib.sha256((DATA / rel).read_bytes()).hexdigest() == digest, rel
