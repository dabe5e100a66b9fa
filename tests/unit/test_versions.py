"""The versions store (no R): numbering, de-duplication, adoption, pruning, making a version live."""

from __future__ import annotations

import json
import os

import pytest

from rbridge.models.versions import VersionStore


def upload(store, name, content: bytes, config=None):
    folder = store.incoming()
    (folder / f"{name}.rds").write_bytes(content)
    if config is not None:
        (folder / f"{name}.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def store(tmp_path):
    return VersionStore(tmp_path / "models", keep=3)


def test_numbers_count_up_and_equal_files_are_one_version(store):
    assert store.add("m", upload(store, "m", b"one"), "ana", "upload")["version"] == 1
    assert store.add("m", upload(store, "m", b"two"), "ana", "upload", label="2.0")["version"] == 2
    again = store.add("m", upload(store, "m", b"one"), "bo", "upload")
    assert (again["version"], again["published_by"]) == (1, "ana")
    assert [(v["version"], v["label"]) for v in store.list("m")] == [(1, None), (2, "2.0")]
    assert not list((store.root / ".incoming").iterdir())       # uploads were moved or removed


def test_make_live_renames_files_in_and_drops_ones_the_version_lacks(store):
    store.add("m", upload(store, "m", b"one"), "ana", "upload")
    store.add("m", upload(store, "m", b"two", config={"version": "2"}), "ana", "upload")
    store.make_live("m", 2)
    assert (store.models_dir / "m.rds").read_bytes() == b"two" and (store.models_dir / "m.json").exists()
    assert [v["active"] for v in store.list("m")] == [False, True]
    store.make_live("m", 1)
    assert (store.models_dir / "m.rds").read_bytes() == b"one" and not (store.models_dir / "m.json").exists()
    assert [v["active"] for v in store.list("m")] == [True, False]
    assert not [p for p in os.listdir(store.models_dir) if p.endswith(".tmp")]


def test_hand_dropped_files_become_a_version_once(store):
    store.models_dir.mkdir(parents=True, exist_ok=True)
    (store.models_dir / "h.rds").write_bytes(b"by hand")
    (store.models_dir / "h.json").write_text('{"version": "v7"}')
    adopted = store.adopt("h")
    assert (adopted["version"], adopted["label"], adopted["how"]) == (1, "v7", "models folder")
    assert store.adopt("h") is None
    assert store.list("h")[0]["active"]


def test_pruning_keeps_the_newest_and_the_active_one(store):
    for i in range(1, 4):
        store.add("m", upload(store, "m", f"v{i}".encode()), "ana", "upload")
    store.make_live("m", 1)
    for i in range(4, 6):
        store.add("m", upload(store, "m", f"v{i}".encode()), "ana", "upload")
    assert [v["version"] for v in store.list("m")] == [1, 4, 5]     # keep=3: 2 and 3 pruned, 1 is served
    assert store.add("m", upload(store, "m", b"v6"), "ana", "upload")["version"] == 6


def test_retire_keeps_the_files_as_a_version(store):
    store.models_dir.mkdir(parents=True)
    (store.models_dir / "d.rds").write_bytes(b"dropped")
    store.retire("d")
    assert not (store.models_dir / "d.rds").exists()
    assert [(v["version"], v["how"], v["active"]) for v in store.list("d")] == [(1, "deleted", False)]


def test_incomplete_versions_are_ignored(store):
    store.add("m", upload(store, "m", b"one"), "ana", "upload")
    (store.root / "m" / "2").mkdir()                  # a copy interrupted before its meta.json
    assert [v["version"] for v in store.list("m")] == [1]
    assert store.folder("m", 2) is None


def test_a_read_only_folder_says_so(store, monkeypatch):
    store.models_dir.mkdir(parents=True)
    assert store.read_only() is None
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert "read-only" in store.read_only()
