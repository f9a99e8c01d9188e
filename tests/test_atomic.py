"""vdsr.atomic: JSON layout and all-or-nothing writes."""

import json

import pytest

from vdsr.atomic import dumps_json, write_json


def test_dumps_json_same_data_and_flat_lists_on_one_line():
    obj = {"step": 3, 2: [1, 2.5, None, True, "a[b]"], "empty": {}, "none": [],
           "history": {"loss": [[100, 715.5], [200, 461.0]]}, "mixed": [[1, [2]], {"k": [1]}]}
    text = dumps_json(obj)
    assert json.loads(text) == json.loads(json.dumps(obj))  # same data, json's key rule (2 -> "2")
    lines = text.splitlines()
    assert '      [100, 715.5],' in lines  # one history entry per line
    assert '  "2": [1, 2.5, null, true, "a[b]"],' in lines
    assert '  "empty": {},' in lines
    assert len(lines) < len(json.dumps(obj, indent=2).splitlines())


def test_write_json_replaces_atomically(tmp_path):
    path = tmp_path / "state.json"
    write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # unserialisable: the old file stays, no temp file is left
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
