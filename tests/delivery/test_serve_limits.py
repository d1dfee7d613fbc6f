"""The service bounds its work: pixel cap before decoding, streaming body limit, bounded concurrency, API key,
every error as ``{"error": ...}``, serve keys validated at startup. The toy task's run keeps it fast."""

from __future__ import annotations

import http.client
import io
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import cv2
import httpx
import numpy as np
import pytest
from conftest import ROOT, run_main
from fastapi.testclient import TestClient
from PIL import Image

from pipeline.data.io import decode_image
from pipeline.delivery import serve
from pipeline.delivery.export import ensure_export
from pipeline.delivery.serve import ServeLimits, create_app, is_loopback
from pipeline.runs.run import Run, compose_command
from pipeline.utils.errors import UserError
from pipeline.utils.validation import validate_config

BOMB_SIDE = 20_000  # 400 megapixels; decoded as RGB it would take 1.2 GB
MB = 1024 * 1024


def png_bomb(side: int) -> bytes:
    """A valid 1-bit grey PNG of ``side`` x ``side`` zeros: some 50 kB for 400 megapixels, made in a fraction of a
    second (Pillow would first hold the whole image in memory to write it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = bytes(1 + (side + 7) // 8) * 100  # filter byte + packed bits, 100 rows at a time
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(rows) for _ in range(side // 100)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png(height: int, width: int, value: int = 200, ext: str = ".png") -> bytes:
    return cv2.imencode(ext, np.full((height, width, 3), value, np.uint8))[1].tobytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss(pid: int) -> int:
    """The peak resident memory of a process in bytes (``VmHWM``)."""
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))


@pytest.fixture(scope="module", name="toy_run")
def exported_toy_run(toy_run, tmp_path_factory):
    """A trained and exported run of the toy brightness task (16x16 inputs): a copy of conftest's, exported here."""
    run_dir = tmp_path_factory.mktemp("results") / "brightness" / toy_run.name
    shutil.copytree(toy_run, run_dir, symlinks=True)
    ensure_export(Run.open(run_dir))
    return run_dir


@pytest.fixture(scope="module")
def server(toy_run, tmp_path_factory):
    """``bin/serve.py`` in its own process (so its memory is its own) with 1 MB uploads: (url, pid)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "2"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "serve.py"), f"run={toy_run}", f"port={port}",
                                 "max_upload_mb=1"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # waits for startup; not a timing assertion
        if proc.poll() is not None:
            pytest.fail(f"bin/serve.py exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ping/").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    yield url, proc.pid
    proc.terminate()
    proc.wait(timeout=30)


def test_png_bomb_is_small_and_really_that_large():
    bomb = png_bomb(BOMB_SIDE)
    assert len(bomb) < 200_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))
    assert decode_image(png_bomb(1000)).shape == (1000, 1000, 3)  # what the decoder makes of one


def test_pixel_cap_answers_413_from_the_header_without_decoding(toy_run, monkeypatch):
    decoded = []
    monkeypatch.setattr(serve, "decode_image", lambda data, source: decoded.append(source) or decode_image(data, source))
    with TestClient(create_app(toy_run, ServeLimits(max_pixels=30 * 30))) as client:
        for image, status in ((png_bomb(BOMB_SIDE), 413), (png(30, 31), 413), (png(31, 30, ext=".jpg"), 413),
                              (png(30, 30), 200)):
            response = client.post("/predict", files={"image": ("x.png", image)})
            assert response.status_code == status and ("error" in response.json()) == (status == 413)
    assert len(decoded) == 1  # only the image within the cap reached the decoder


def test_bomb_gets_413_and_server_memory_stays_flat(server):
    url, pid = server
    before = peak_rss(pid)
    response = httpx.post(f"{url}/predict", files={"image": ("bomb.png", png_bomb(BOMB_SIDE))}, timeout=60)
    assert response.status_code == 413 and "max_pixels" in response.json()["error"]
    assert peak_rss(pid) - before < 100 * MB and peak_rss(pid) < 1536 * MB


def post_chunked(url: str, total: int, chunk: int = 64 * 1024) -> tuple[int, int, bytes]:
    """POST a chunked multipart upload of ``total`` bytes, stopping as soon as the server answers:
    (bytes sent, status, body)."""
    host, port = url.removeprefix("http://").split(":")
    head = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        sent, data = 0, head + bytes(chunk - len(head))
        while sent < total and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent, data = sent + len(data), bytes(chunk)
        if sent >= total:  # a server that read it all gets the end of the body and answers
            sock.sendall(b"0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return sent, response.status, response.read()


def test_chunked_body_stops_being_read_at_the_cap(server):
    url, pid = server
    before = peak_rss(pid)
    sent, status, body = post_chunked(url, total=500 * MB)
    assert status == 413 and b'"error"' in body
    # The cap is 2 MB + 64 kB: the answer came once that much (plus socket buffers) was read, not 500 MB.
    assert sent < 50 * MB
    assert peak_rss(pid) - before < 100 * MB


def test_content_length_above_the_cap_is_refused_before_the_body(server):
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        # No body follows: an answer at all shows the server did not wait for it.
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 413 and b'"error"' in response.read()


def test_concurrency_is_bounded_and_the_excess_gets_503(toy_run, monkeypatch):
    app = create_app(toy_run, ServeLimits(max_concurrency=1, max_queue=1))
    exported, release, entered = app.state.exported, threading.Event(), threading.Event()
    inside, peak, lock = [0], [0], threading.Lock()
    answer = exported.answer

    def blocking_answer(*images, **request_options):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        entered.set()
        release.wait(60)
        with lock:
            inside[0] -= 1
        return answer(*images, **request_options)

    monkeypatch.setattr(exported, "answer", blocking_answer)
    image = png(24, 24)
    with TestClient(app) as client, ThreadPoolExecutor(3) as pool:
        def post():
            return client.post("/predict", files={"image": ("x.png", image)})

        first = pool.submit(post)
        assert entered.wait(60)
        others = [pool.submit(post), pool.submit(post)]
        done, _ = wait(others, timeout=60, return_when=FIRST_COMPLETED)  # only a refusal can finish now
        (refused,) = done
        response = refused.result()
        assert response.status_code == 503 and response.headers["retry-after"] == "1" and "error" in response.json()
        assert client.get("/ping/").status_code == 200  # health checks are not queued
        release.set()
        (queued,) = set(others) - done
        assert first.result().status_code == 200 and queued.result().status_code == 200
    assert peak[0] == 1


def test_every_error_has_the_error_shape(toy_run, monkeypatch):
    app = create_app(toy_run, ServeLimits(max_upload_bytes=1000))
    monkeypatch.setattr(app.state.exported, "answer", lambda *images, **options: 1 / 0)  # a bug: the one way to a 500
    with TestClient(app, raise_server_exceptions=False) as client:
        cases = {
            "unknown route": (client.get("/nope"), 404),
            "wrong method": (client.get("/predict"), 405),
            "no image field": (client.post("/predict", files={"file": ("x.png", png(8, 8))}), 422),
            "image too large": (client.post("/predict", files={"image": ("x.png", bytes(1500))}), 413),
            "body too large": (client.post("/predict", content=bytes(100_000)), 413),
            "not an image": (client.post("/predict", files={"image": ("x.txt", b"hello")}), 415),
            "empty": (client.post("/predict", files={"image": ("x.png", b"")}), 400),
            "internal": (client.post("/predict", files={"image": ("x.png", png(8, 8))}), 500),
        }
        for name, (response, status) in cases.items():
            assert response.status_code == status, name
            assert set(response.json()) == {"error"} and response.json()["error"], name
        assert client.get("/predict").headers["allow"] == "POST"


def test_api_key_guards_every_route_but_ping(toy_run, monkeypatch):
    image = {"image": ("x.png", png(24, 24))}
    with TestClient(create_app(toy_run, ServeLimits(api_key="s3cret"))) as client:
        assert client.get("/ping/").status_code == 200
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = client.post("/predict", files=image, headers=headers)
            assert response.status_code == 401 and "error" in response.json(), headers
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/nope").status_code == 401  # routes are not revealed without the key
        for headers in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
            assert client.post("/predict", files=image, headers=headers).status_code == 200, headers
    monkeypatch.setenv(serve.API_KEY_ENV, "from-env")
    assert ServeLimits.from_config(compose_command("serve", [f"run={toy_run}"]).cfg).api_key == "from-env"
    assert ServeLimits.from_config(compose_command("serve", [f"run={toy_run}", "api_key=k"]).cfg).api_key == "k"


@pytest.mark.parametrize("override, key", [
    ("port=70000", "port"), ("port=abc", "port"), ("max_upload_mb=0", "max_upload_mb"),
    ("max_pixels=0", "max_pixels"), (f"max_pixels={2 * Image.MAX_IMAGE_PIXELS + 1}", "max_pixels"),
    ("max_concurrency=0", "max_concurrency"), ("max_queue=-1", "max_queue"), ("threads=0", "threads"),
    ("api_key=''", "api_key"),
])
def test_unusable_serve_values_are_named(toy_run, override, key):
    cfg = compose_command("serve", [f"run={toy_run}", override]).cfg
    with pytest.raises(UserError, match=rf"^{key}="):
        validate_config(cfg)


def test_serve_cli_refuses_a_bad_value_in_one_line(toy_run):
    proc = run_main("serve.py", f"run={toy_run}", "max_upload_mb=-1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: max_upload_mb=-1: expected a finite number > 0"]


def test_loopback_hosts():
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "::1", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.5", "example.org")))
