"""The Store conformance suite: what every backend must do, whatever its medium.

A backend joins by adding one entry to STORE_FACTORIES: a function (tmp_path) -> Store that opens a
fresh, empty store. tests/test_store.py runs everything here against every entry (the fixture `store`
and the state machine are both parametrized over the factories). Cloud backends will add their entries
next to their server fixtures (moto, fake-gcs-server, Azurite), so this file itself stays backend-neutral.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from dvx.errors import NotFoundError, PreconditionFailed, UsageError
from dvx.fs import Store, open_store

StoreFactory = Callable[[Path], Store]


def memory_store(tmp_path: Path) -> Store:
    return open_store(f"memory://{uuid.uuid4().hex}")


def local_store(tmp_path: Path) -> Store:
    return open_store(str(tmp_path / f"s-{uuid.uuid4().hex[:8]}"))


def s3_store(tmp_path: Path) -> Store:
    from servers import new_s3_bucket

    return open_store(f"s3://{new_s3_bucket()}/store-{uuid.uuid4().hex[:6]}")


def gcs_store(tmp_path: Path) -> Store:
    from servers import new_gcs_bucket

    return open_store(f"gs://{new_gcs_bucket()}/store-{uuid.uuid4().hex[:6]}")


def azure_store(tmp_path: Path) -> Store:
    from servers import new_azure_container

    return open_store(f"az://{new_azure_container()}/store-{uuid.uuid4().hex[:6]}")


STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": memory_store,
    "local": local_store,
    "s3": s3_store,
    "gcs": gcs_store,
    "azure": azure_store,
}

# Keys that could escape the root or alias another key, and the ".dvx-" namespace backends keep for
# their own bookkeeping.
INVALID_KEYS = ["../x", "/abs", "a//b", "a/../b", "a/./b", "a/", "", "a\x00b", ".dvx-tmp/x", ".dvx-anything"]


class StoreConformance:
    """Contract tests. Subclass with a `store` fixture yielding a fresh store of the backend under test."""

    # -- create-only writes ------------------------------------------------------------------------
    def test_put_create_writes_once_and_keeps_the_first_content(self, store: Store):
        """put_create returns True the first time, False after, and never replaces the stored bytes."""
        assert store.put_create("objects/a", b"first") is True
        assert store.put_create("objects/a", b"second") is False
        assert store.read("objects/a") == b"first"
        assert store.exists("objects/a")

    def test_put_create_of_empty_and_binary_content(self, store: Store):
        """Zero-byte objects and arbitrary bytes round trip exactly."""
        blob = bytes(range(256)) * 41
        assert store.put_create("e", b"")
        assert store.put_create("deep/er/blob.bin", blob)
        assert store.read("e") == b""
        assert store.read("deep/er/blob.bin") == blob
        assert store.info("e").size == 0
        assert store.info("deep/er/blob.bin").size == len(blob)

    # -- reads ---------------------------------------------------------------------------------------
    def test_read_of_missing_key_raises_not_found(self, store: Store):
        """Absent objects are a NotFoundError (never FileNotFoundError or None)."""
        with pytest.raises(NotFoundError):
            store.read("missing/key")
        assert not store.exists("missing/key")

    def test_read_of_a_folder_is_not_an_object(self, store: Store):
        """A key that is only a folder prefix reads as missing and is reported as a folder."""
        store.put_create("folder/inner", b"x")
        with pytest.raises(NotFoundError):
            store.read("folder")
        assert store.is_dir("folder")
        assert not store.exists("folder")
        assert not store.is_dir("folder/inner")

    def test_read_ranges_returns_ranges_in_the_order_given(self, store: Store):
        """read_ranges gives [start, end) slices in request order, including empty and repeated ranges."""
        data = bytes(range(256)) * 8
        store.put_create("r", data)
        ranges = [(100, 200), (0, 10), (2040, 2048), (5, 5), (0, 10)]
        assert store.read_ranges("r", ranges) == [data[s:e] for s, e in ranges]
        assert store.read_ranges("r", []) == []

    def test_read_ranges_past_the_end_or_missing_is_not_found(self, store: Store):
        """A range beyond the object (a truncated pack) or a missing object raises NotFoundError."""
        store.put_create("short", b"0123456789")
        with pytest.raises(NotFoundError):
            store.read_ranges("short", [(5, 20)])
        with pytest.raises(NotFoundError):
            store.read_ranges("nope", [(0, 1)])

    def test_info_reports_size_and_mtime(self, store: Store):
        """info gives the key, size in bytes and a plausible modification time; missing → NotFoundError."""
        store.put_create("i/x", b"12345")
        info = store.info("i/x")
        assert info.key == "i/x"
        assert info.size == 5
        assert info.mtime > 1_000_000_000
        with pytest.raises(NotFoundError):
            store.info("i/y")

    # -- listing -------------------------------------------------------------------------------------
    def test_list_is_one_level_and_sorted(self, store: Store):
        """list(prefix) names files and sub-folders directly under prefix, sorted, without recursion."""
        for key in ["p/b", "p/a", "p/sub/x", "p/sub/deeper/y", "p/c.txt", "other/z"]:
            assert store.put_create(key, key.encode())
        assert store.list("p") == ["a", "b", "c.txt", "sub"]
        assert store.list("p/sub") == ["deeper", "x"]
        assert store.list("nothing/here") == []

    def test_exists_and_is_dir(self, store: Store):
        """exists is true for objects only; is_dir for folders only."""
        store.put_create("d/o", b"1")
        assert store.exists("d/o") and not store.is_dir("d/o")
        assert store.is_dir("d") and not store.exists("d")
        assert not store.exists("d/none") and not store.is_dir("d/none")

    def test_walk_yields_every_object_below_a_prefix(self, store: Store):
        """walk(prefix) yields each object key below prefix exactly once, with full keys."""
        keys = {"w/a", "w/b/c", "w/b/d/e", "w/f/g", "x/outside"}
        for key in keys:
            store.put_create(key, b"v")
        assert sorted(store.walk("w")) == sorted(k for k in keys if k.startswith("w/"))
        assert sorted(store.walk("w/b")) == ["w/b/c", "w/b/d/e"]
        assert list(store.walk("empty")) == []

    def test_walk_of_the_root_lists_exactly_the_written_objects(self, store: Store):
        """The key space belongs to callers: after create-only writes, CAS writes and an aborted upload,
        walking the whole store shows exactly the keys written (no bookkeeping files or folders)."""
        store.put_create("a/one", b"1")
        store.put_if("refs/r", b"ref", None)
        upload = store.begin_upload()
        upload.write(b"partial")
        upload.abort()
        upload = store.begin_upload()
        upload.write(b"pack")
        assert upload.commit("packs/p")
        assert sorted(store.walk("")) == ["a/one", "packs/p", "refs/r"]
        assert store.list("") == ["a", "packs", "refs"]

    @pytest.mark.parametrize("key", ["tmp", "locks", "tmp/x", "locks/y"])
    def test_any_valid_key_is_usable(self, store: Store, key: str):
        """No valid key is reserved: even names a backend might use internally can be created and read."""
        store.put_if("refs/warm-up", b"x", None)  # let the backend create whatever it keeps for itself
        store.begin_upload().abort()
        assert store.put_create(key, b"payload") is True
        assert store.read(key) == b"payload"

    # -- uploads (packs) -----------------------------------------------------------------------------
    def test_upload_write_then_commit_publishes_once(self, store: Store):
        """An upload assembles pieces; commit publishes create-only (a second commit to the key is False)."""
        upload = store.begin_upload()
        upload.write(b"abc")
        upload.write(memoryview(b"defg"))
        assert upload.tell() == 7
        assert upload.commit("packs/x.pack") is True
        assert store.read("packs/x.pack") == b"abcdefg"

        again = store.begin_upload()
        again.write(b"other")
        assert again.commit("packs/x.pack") is False
        assert store.read("packs/x.pack") == b"abcdefg"

    def test_aborted_upload_leaves_nothing(self, store: Store):
        """abort discards everything written: no object appears anywhere in the store."""
        before = sorted(store.walk(""))
        upload = store.begin_upload()
        upload.write(b"x" * 10_000)
        upload.abort()
        assert sorted(store.walk("")) == before
        assert not store.exists("packs/never")

    # -- compare-and-swap (refs) -----------------------------------------------------------------------
    def test_read_versioned_of_missing_key(self, store: Store):
        """An absent ref reads as (None, None)."""
        assert store.read_versioned("refs/none") == (None, None)

    def test_put_if_none_token_creates_only(self, store: Store):
        """Token None means 'still absent': it creates the key once and fails once the key exists."""
        token = store.put_if("refs/t", b"v1", None)
        assert isinstance(token, str) and token
        assert store.read_versioned("refs/t") == (b"v1", token)
        with pytest.raises(PreconditionFailed):
            store.put_if("refs/t", b"v2", None)
        assert store.read("refs/t") == b"v1"

    def test_put_if_refuses_a_stale_token_and_accepts_the_new_one(self, store: Store):
        """A writer holding an old token loses (PreconditionFailed, nothing written); the current token wins."""
        t1 = store.put_if("refs/t", b"v1", None)
        t2 = store.put_if("refs/t", b"v2", t1)
        assert t2 != t1
        with pytest.raises(PreconditionFailed):
            store.put_if("refs/t", b"v3-from-stale-writer", t1)
        assert store.read("refs/t") == b"v2"
        t3 = store.put_if("refs/t", b"v3", t2)
        assert store.read_versioned("refs/t") == (b"v3", t3)

    def test_put_if_with_a_token_on_a_missing_key_fails(self, store: Store):
        """A token for a key that has since been deleted (or never existed) is stale."""
        token = store.put_if("refs/t", b"v1", None)
        store.delete("refs/t")
        with pytest.raises(PreconditionFailed):
            store.put_if("refs/t", b"v2", token)
        assert not store.exists("refs/t")

    # -- delete ----------------------------------------------------------------------------------------
    def test_delete_removes_and_is_idempotent(self, store: Store):
        """delete removes an object; deleting again (or a missing key) is not an error."""
        store.put_create("del/x", b"1")
        store.delete("del/x")
        assert not store.exists("del/x")
        with pytest.raises(NotFoundError):
            store.read("del/x")
        store.delete("del/x")
        assert store.put_create("del/x", b"2") is True
        assert store.read("del/x") == b"2"

    # -- key validation --------------------------------------------------------------------------------
    @pytest.mark.parametrize("key", INVALID_KEYS, ids=repr)
    def test_invalid_keys_are_refused_on_write(self, store: Store, key: str):
        """Keys that could escape the store root or alias another key raise UsageError before any I/O."""
        with pytest.raises(UsageError):
            store.put_create(key, b"x")
        with pytest.raises(UsageError):
            store.put_if(key, b"x", None)

    @pytest.mark.parametrize("key", INVALID_KEYS, ids=repr)
    def test_invalid_keys_are_refused_on_read(self, store: Store, key: str):
        """Reads, CAS reads and deletes validate keys too."""
        with pytest.raises(UsageError):
            store.read(key)
        with pytest.raises(UsageError):
            store.read_versioned(key)
        with pytest.raises(UsageError):
            store.delete(key)


# -- the state machine ---------------------------------------------------------------------------------

KEYS = ["k/a", "k/b/c", "k/b/d", "k/e/f/g"]  # never nested inside each other
VALUES = st.binary(max_size=64)


def make_state_machine(factory: StoreFactory) -> type[RuleBasedStateMachine]:
    """A machine that drives a fresh store of `factory` and a dict model side by side."""

    class StoreMachine(RuleBasedStateMachine):
        tokens = Bundle("tokens")

        def __init__(self) -> None:
            super().__init__()
            self._tmp = Path(tempfile.mkdtemp(prefix="dvx-store-sm-"))
            self.store = factory(self._tmp)
            self.model: dict[str, bytes] = {}
            # The token of each key's current content, once learnt (None = not learnt yet).
            self.current_token: dict[str, str | None] = {}

        def teardown(self) -> None:
            self.store.close()
            shutil.rmtree(self._tmp, ignore_errors=True)

        def _learn_token(self, key: str) -> str | None:
            data, token = self.store.read_versioned(key)
            assert data == self.model.get(key)
            assert (token is None) == (key not in self.model)
            self.current_token[key] = token
            return token

        @rule(key=st.sampled_from(KEYS), data=VALUES)
        def put_create(self, key: str, data: bytes) -> None:
            created = self.store.put_create(key, data)
            assert created == (key not in self.model)
            if created:
                self.model[key] = data
                self.current_token[key] = None

        @rule(target=tokens, key=st.sampled_from(KEYS))
        def read_versioned(self, key: str):
            token = self._learn_token(key)
            return token or "never-a-token"

        @rule(target=tokens, key=st.sampled_from(KEYS), data=VALUES)
        def cas_with_current_token(self, key: str, data: bytes):
            token = self._learn_token(key)
            new = self.store.put_if(key, data, token)
            assert isinstance(new, str) and new
            self.model[key] = data
            self.current_token[key] = new
            return new

        @rule(key=st.sampled_from(KEYS), data=VALUES, stale=tokens)
        def cas_with_remembered_token(self, key: str, data: bytes, stale: str) -> None:
            """A token from earlier: wins only if it is still the key's current token."""
            current = self._learn_token(key)
            if stale == current:
                new = self.store.put_if(key, data, stale)
                self.model[key] = data
                self.current_token[key] = new
            else:
                with pytest.raises(PreconditionFailed):
                    self.store.put_if(key, data, stale)

        @rule(key=st.sampled_from(KEYS), data=VALUES)
        def cas_create(self, key: str, data: bytes) -> None:
            if key in self.model:
                with pytest.raises(PreconditionFailed):
                    self.store.put_if(key, data, None)
            else:
                self.current_token[key] = self.store.put_if(key, data, None)
                self.model[key] = data

        @rule(key=st.sampled_from(KEYS))
        def delete(self, key: str) -> None:
            self.store.delete(key)
            self.model.pop(key, None)
            self.current_token.pop(key, None)

        @rule(key=st.sampled_from(KEYS))
        def read(self, key: str) -> None:
            if key in self.model:
                assert self.store.read(key) == self.model[key]
            else:
                with pytest.raises(NotFoundError):
                    self.store.read(key)

        @rule(key=st.sampled_from(KEYS), start=st.integers(0, 64), length=st.integers(0, 64))
        def read_range(self, key: str, start: int, length: int) -> None:
            data = self.model.get(key)
            if data is not None and start + length <= len(data):
                assert self.store.read_ranges(key, [(start, start + length)]) == [data[start:start + length]]

        @invariant()
        def contents_match_the_model(self) -> None:
            for key in KEYS:
                assert self.store.exists(key) == (key in self.model)
            assert sorted(self.store.walk("k")) == sorted(self.model)

    return StoreMachine
