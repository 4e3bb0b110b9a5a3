"""Resuming a download only where the server's partial answer continues the partial file: a 206 whose
Content-Range starts elsewhere than the ``.part`` ends must not be appended (a real HTTP server on
127.0.0.1, in this process)."""

from __future__ import annotations

import pytest
from test_fetch import BODY, FAST, SHA, Handler, serving, spec

from tomodata.fetch import FetchConnectionError, fetch_one


class RangeHandler(Handler):
    """``/wrongstart/``: a Range request gets a 206 of the whole file (Content-Range from byte 0), as a
    cache that drops the offset may send; a plain request gets the file (200). ``/always/``: every
    answer is a 206 from byte 7, whatever was asked."""

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.log.append((self.path, self.headers.get("Range")))
        n = len(BODY)
        if self.path == "/wrongstart/skull.mp4":
            if self.headers.get("Range"):
                return self._send(206, BODY, extra={"Content-Range": f"bytes 0-{n - 1}/{n}"})
            return self._send(200, BODY)
        if self.path == "/always/skull.mp4":
            return self._send(206, BODY[7:], extra={"Content-Range": f"bytes 7-{n - 1}/{n}"})
        return self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def range_server():
    with serving(RangeHandler) as srv:
        srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
        yield srv


def test_206_from_another_offset_restarts_from_zero(range_server, tmp_path):
    """A 206 that starts at byte 0 for a part of 1,000 bytes is not appended to it: the part is
    dropped and the file fetched whole (appending gives 1,000 bytes too many: a wrong file)."""
    range_server.log = []
    (tmp_path / "sp1").mkdir()
    (tmp_path / "sp1" / "skull.mp4.part").write_bytes(BODY[:1000])
    res = fetch_one(spec(f"{range_server.url}/wrongstart/skull.mp4", sha=SHA), tmp_path, **FAST)
    assert res.path.read_bytes() == BODY and res.sha256 == SHA
    assert not res.resumed
    assert [r for _, r in range_server.log] == ["bytes=1000-", None]
    assert not (tmp_path / "sp1" / "skull.mp4.part").exists()


def test_206_that_never_fits_is_an_error_not_a_file(range_server, tmp_path):
    """A server whose partial answers never continue the part ends in a clear error after a few
    restarts, with no final file."""
    range_server.log = []
    url = f"{range_server.url}/always/skull.mp4"
    with pytest.raises(FetchConnectionError, match="partial answers do not fit"):
        fetch_one(spec(url), tmp_path, **FAST)
    assert not (tmp_path / "sp1" / "skull.mp4").exists()
    assert len(range_server.log) == 3
