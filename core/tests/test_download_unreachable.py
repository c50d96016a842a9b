"""When the host of a URL cannot be reached, the error says so first, then where to put the file by hand."""

import socket
import sys
import types
import urllib.error

import pytest

from openpi_core import download
from openpi_core.download import DownloadError, UnreachableError, cache_path, maybe_download

URL = "gs://openpi-assets/checkpoints/pi0_base/assets/trossen/norm_stats.json"


@pytest.fixture
def without_gcsfs(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)


def failing_urlopen(error):
    def urlopen(url, timeout=None):
        raise error

    return urlopen


def check_unreachable_message(message: str, host: str, expected_path) -> None:
    assert message.startswith(f"the network is unreachable: cannot reach {host}"), message
    by_hand = message.index(f"place the file or folder by hand at {expected_path}")
    assert by_hand > message.index("unreachable") and URL in message[by_hand:]
    assert "gcsfs" not in message


def test_a_failed_name_lookup_says_the_network_is_unreachable_then_where_to_put_the_file(
    tmp_path, monkeypatch, without_gcsfs
):
    lookup = urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    monkeypatch.setattr(download.urllib.request, "urlopen", failing_urlopen(lookup))
    with pytest.raises(UnreachableError) as caught:
        maybe_download(URL, cache_dir=tmp_path)
    check_unreachable_message(str(caught.value), "storage.googleapis.com", cache_path(URL, tmp_path))
    assert "Name or service not known" in str(caught.value)


def test_a_refused_connection_is_unreachable_too(tmp_path, monkeypatch, without_gcsfs):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setattr(download, "GCS_HTTPS_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(UnreachableError) as caught:
        maybe_download(URL, cache_dir=tmp_path)
    check_unreachable_message(str(caught.value), "127.0.0.1", cache_path(URL, tmp_path))


def test_an_answer_from_the_host_still_suggests_gcsfs_for_directories(tmp_path, monkeypatch, without_gcsfs):
    missing = urllib.error.HTTPError("https://storage.googleapis.com/x", 404, "Not Found", {}, None)
    monkeypatch.setattr(download.urllib.request, "urlopen", failing_urlopen(missing))
    with pytest.raises(DownloadError) as caught:
        maybe_download(URL, cache_dir=tmp_path)
    assert not isinstance(caught.value, UnreachableError)
    message = str(caught.value)
    assert message.startswith("could not fetch") and "pip install gcsfs" in message
    assert "place the file or folder by hand" in message


def test_gcsfs_failing_to_connect_is_unreachable(tmp_path, monkeypatch):
    class OfflineFilesystem:
        def get(self, url, destination, recursive=False):
            raise AssertionError("isdir fails first")

        def isdir(self, url):
            try:
                raise socket.gaierror(-3, "Temporary failure in name resolution")
            except socket.gaierror as cause:
                raise OSError("Cannot connect to host storage.googleapis.com:443") from cause

    fsspec = types.ModuleType("fsspec")
    fsspec.filesystem = lambda protocol: OfflineFilesystem()
    monkeypatch.setitem(sys.modules, "fsspec", fsspec)
    with pytest.raises(UnreachableError) as caught:
        maybe_download("gs://openpi-assets/checkpoints/pi0_base", cache_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith("the network is unreachable: cannot reach storage.googleapis.com")
    assert "place the file or folder by hand" in message
