"""maybe_download on local paths and file:// URLs (no network): cache layout, reuse, locking."""

import threading
import time

import pytest

from openpi_core import download
from openpi_core.download import DownloadError, cache_path, gs_to_https, is_url, maybe_download


@pytest.fixture
def source(tmp_path):
    file = tmp_path / "src" / "weights.bin"
    file.parent.mkdir()
    file.write_bytes(b"\x00\x01" * 1000)
    return file


def test_local_paths_are_returned_without_copying(source, tmp_path):
    assert maybe_download(source, cache_dir=tmp_path / "cache") == source.resolve()
    assert maybe_download(str(source.parent)) == source.parent.resolve()
    assert not (tmp_path / "cache").exists()
    with pytest.raises(DownloadError, match="no such file or directory"):
        maybe_download(tmp_path / "absent")


def test_file_url_is_copied_into_the_cache_once(source, tmp_path):
    cache = tmp_path / "cache"
    local = maybe_download(source.as_uri(), cache_dir=cache)
    assert local == cache.resolve() / "file" / str(source).lstrip("/")
    assert local.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in local.parent.iterdir()) == ["weights.bin", "weights.bin.lock"]
    source.write_bytes(b"changed")
    assert maybe_download(source.as_uri(), cache_dir=cache).read_bytes() == b"\x00\x01" * 1000
    assert maybe_download(source.as_uri(), cache_dir=cache, force=True).read_bytes() == b"changed"


def test_file_url_of_a_directory(source, tmp_path):
    local = maybe_download(source.parent.as_uri(), cache_dir=tmp_path / "cache")
    assert local.is_dir()
    assert (local / "weights.bin").read_bytes() == source.read_bytes()


def test_cache_dir_comes_from_openpi_data_home(source, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "home"))
    local = maybe_download(source.as_uri())
    assert local.is_relative_to((tmp_path / "home").resolve())


def test_missing_file_url_is_a_download_error(tmp_path):
    with pytest.raises(DownloadError, match="could not fetch"):
        maybe_download((tmp_path / "absent.bin").as_uri(), cache_dir=tmp_path / "cache")
    assert not any(p.suffix in (".partial", ".bin") for p in (tmp_path / "cache").rglob("*"))


def test_gs_urls_map_to_the_public_endpoint_and_openpi_cache_layout(tmp_path):
    url = "gs://openpi-assets/checkpoints/pi0_base/params"
    assert gs_to_https(url) == "https://storage.googleapis.com/openpi-assets/checkpoints/pi0_base/params"
    assert cache_path(url, tmp_path) == tmp_path.resolve() / "openpi-assets" / "checkpoints" / "pi0_base" / "params"
    assert is_url(url) and is_url("https://x/y") and not is_url("/tmp/x") and not is_url(r"C:\x\y")


def test_urls_cannot_escape_the_cache(tmp_path):
    with pytest.raises(DownloadError, match="outside the cache"):
        cache_path("https://example.com/../../etc/passwd", tmp_path / "cache")


def test_concurrent_callers_download_once(source, tmp_path, monkeypatch):
    calls = []
    real_fetch = download._fetch

    def slow_fetch(url, destination):
        calls.append(url)
        time.sleep(0.2)
        real_fetch(url, destination)

    monkeypatch.setattr(download, "_fetch", slow_fetch)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(maybe_download(source.as_uri(), cache_dir=tmp_path / "c")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and results[0].read_bytes() == source.read_bytes()


def test_hf_urls_map_to_the_resolve_endpoint():
    assert download.hf_to_https("hf://google/paligemma-3b/tokenizer.model") == (
        "https://huggingface.co/google/paligemma-3b/resolve/main/tokenizer.model"
    )
    assert download.hf_to_https("hf://org/repo@v1.2/sub/dir/file.json") == (
        "https://huggingface.co/org/repo/resolve/v1.2/sub/dir/file.json"
    )
    assert is_url("hf://org/repo/file")
    with pytest.raises(DownloadError, match=r"expected hf://<org>/<repo>\[@<revision>\]/<path>, got 'hf://org/repo'"):
        download.hf_to_https("hf://org/repo")


def test_hf_urls_are_cached_under_their_https_layout(tmp_path):
    local = cache_path("hf://org/repo@abc/assets/norm_stats.json", tmp_path)
    assert (
        local
        == tmp_path.resolve() / "huggingface.co" / "org" / "repo" / "resolve" / "abc" / "assets" / "norm_stats.json"
    )


def test_hf_file_is_fetched_through_the_endpoint(tmp_path, monkeypatch):
    hub = tmp_path / "hub" / "org" / "repo" / "resolve" / "main"
    hub.mkdir(parents=True)
    (hub / "tokenizer.model").write_bytes(b"spm")
    monkeypatch.setattr(download, "HF_HTTPS_ENDPOINT", (tmp_path / "hub").as_uri())
    local = maybe_download("hf://org/repo/tokenizer.model", cache_dir=tmp_path / "cache")
    assert local.read_bytes() == b"spm"


def test_offline_error_names_the_url_and_the_cache_path_to_fill_by_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "HF_HTTPS_ENDPOINT", (tmp_path / "unreachable").as_uri())
    url = "hf://org/repo@v2/weights/model.safetensors"
    expected = cache_path(url, tmp_path / "cache")
    with pytest.raises(DownloadError) as caught:
        maybe_download(url, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert "could not fetch" in message and "org/repo/resolve/v2/weights/model.safetensors" in message
    assert f"place the file or folder by hand at {expected}" in message and url in message
    expected.write_bytes(b"placed by hand")
    assert maybe_download(url, cache_dir=tmp_path / "cache").read_bytes() == b"placed by hand"
