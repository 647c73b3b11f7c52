"""The one rule for "is this a Hub id?" (kface.utils.hub.is_hub_id), against paths that exist, paths written as
paths, and ids of the Hub's owner/name shape."""

import pytest

from kface.utils.hub import is_hub_id


@pytest.mark.parametrize("source, expected", [
    ("user/faces-32", True),
    ("user/faces/32px", False),     # two slashes: a relative path, not a repo
    ("faces", False),               # a bare name is a (missing) local folder
    ("./user/faces", False),
    ("/data/faces", False),
    ("~/faces", False),
    ("user/", False),
    ("/user", False),
])
def test_hub_id_shape(source, expected):
    assert is_hub_id(source) is expected


def test_an_existing_local_folder_is_never_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "user" / "faces").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("user/faces")
    assert is_hub_id("user/other")
