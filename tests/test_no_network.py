"""The app starts with no network and opens no outbound connection during a whole session.

``python -m demo`` runs in a subprocess whose sockets are guarded: any connection or name lookup
that is not loopback is refused and recorded. The subprocess gets none of the offline switches the
test suite sets (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, GRADIO_ANALYTICS_ENABLED), so whatever stays
offline does so by the app's own doing. A session (page, config, /load_study, /ask, /retrieve) is
driven over loopback; afterwards the record must be empty. (The browser's own requests for fonts or
CDNs are checked by ``tests/test_browser.py``.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
GUARD = textwrap.dedent(
    """
    import ipaddress, os, socket, sys
    RECORD = os.environ["MVCM_TEST_NET_RECORD"]
    def _local(host):
        if host in (None, "", "localhost") or str(host).startswith("/"):
            return True
        try:
            address = ipaddress.ip_address(str(host).split("%")[0])
        except ValueError:
            return False
        return address.is_loopback or address.is_unspecified
    def _refuse(what):
        with open(RECORD, "a") as handle:
            handle.write(what + "\\n")
        raise OSError(f"network blocked by the test: {what}")
    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _refuse(f"connect {address!r}")
        return _connect(self, address)
    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _refuse(f"connect_ex {address!r}")
        return _connect_ex(self, address)
    def getaddrinfo(host, *args, **kwargs):
        if not _local(host if not isinstance(host, bytes) else host.decode()):
            _refuse(f"getaddrinfo {host!r}")
        return _getaddrinfo(host, *args, **kwargs)
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    sys.argv = ["demo"] + sys.argv[1:]
    from demo.app import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_whole_session_makes_no_outbound_connection(tmp_path):
    import httpx
    from app_fixtures import build_served, free_port
    from gradio_client import Client, handle_file

    checkpoint, study = build_served(tmp_path)
    record = tmp_path / "outbound.txt"
    record.write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "GRADIO_ANALYTICS_ENABLED")}
    env.update(MVCM_TEST_NET_RECORD=str(record), GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "-c", GUARD, "--host", "127.0.0.1", "--port", str(port), "--checkpoint", str(checkpoint)],
        cwd=Path(__file__).parents[1], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            if app.poll() is not None:
                pytest.fail(f"the app exited: {app.stdout.read()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        pages = [httpx.get(url + path, timeout=60) for path in ("", "config", "gradio_api/info")]
        assert [p.status_code for p in pages] == [200, 200, 200]
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False,
                        httpx_kwargs={"timeout": 300})
        files = [handle_file(str(study / "PA.dcm")), handle_file(str(study / "LL.dcm"))]
        assert client.predict(files=files, api_name="/load_study")["summary"].startswith("1 study")
        assert client.predict(files=files, question="Is there a pleural effusion?", top_k=3, api_name="/ask")["answer"]
        assert client.predict(files=files, k=3, api_name="/retrieve")["reports"]
        client.close()
        time.sleep(1.0)
    finally:
        app.terminate()
        output = app.communicate(timeout=60)[0]
    attempts = record.read_text().splitlines()
    assert attempts == [], f"outbound attempts: {attempts}\n{output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
