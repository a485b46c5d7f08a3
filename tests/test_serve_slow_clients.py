"""A real ``ferlab serve`` against slow, idle and greedy clients (issue 50), over raw sockets.

Each attack runs while another client address posts a real photo (scikit-image's astronaut.png,
the default detector): the attackers get 408 or 429 in the server's JSON error format, the photo
still gets 200. The server runs with time limits of about a second so the tests stay fast;
attackers and the honest client use different loopback addresses (127.0.0.0/8 is all loopback),
as clients on other machines would.
"""

import contextlib
import http.client
import json
import select
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
skdata = pytest.importorskip("skimage.data")

from test_serve import running_server  # noqa: E402  (tests/ is on sys.path, see conftest.py)

HEADER_TIMEOUT = 1.5
READ_TIMEOUT = 1.5
GRACE = 1.0
MIN_RATE = 1000
CLIENT_CONNECTIONS = 4
CLIENT_UPLOADS = 2
HONEST = "127.0.0.2"
ASTRONAUT = Path(skdata.__file__).parent / "astronaut.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    args = [
        f"--header-timeout={HEADER_TIMEOUT}",
        f"--read-timeout={READ_TIMEOUT}",
        f"--upload-grace={GRACE}",
        f"--min-upload-rate={MIN_RATE}",
        f"--max-client-connections={CLIENT_CONNECTIONS}",
        f"--max-client-uploads={CLIENT_UPLOADS}",
    ]
    with running_server(args, log) as url:
        yield int(url.rsplit(":", 1)[1]), log


@pytest.fixture(scope="module")
def photo():
    return ASTRONAUT.read_bytes()


def connect(port: int, source: str) -> socket.socket:
    """A TCP connection to the server from loopback address ``source``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def post_photo(connection: http.client.HTTPConnection, photo: bytes) -> int:
    """POST the photo over ``connection``; its status (and one face found when 200)."""
    connection.request("POST", "/v1/analyze", body=photo, headers={"Content-Type": "image/png"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status == 200:
        assert len(answer["faces"]) == 1
    return response.status


def honest(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(HONEST, 0))


def read_answer(sock: socket.socket, seconds: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (``seconds`` at most)."""
    sock.settimeout(seconds)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def parse(answer: bytes) -> tuple[int, dict[str, str], dict]:
    """Status, headers (lower-case names) and JSON body of one raw HTTP response."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def assert_error(answer: bytes, status: int, code: str) -> dict[str, str]:
    got, headers, body = parse(answer)
    assert got == status, answer[:300]
    assert headers["content-type"] == "application/json"
    assert body["error"]["code"] == code and "\n" not in body["error"]["message"]
    return headers


def trickle(sock: socket.socket, head: bytes, piece: bytes, every: float, out: list) -> None:
    """Send ``head``, then ``piece`` every ``every`` s until the server answers; append the
    answer and the seconds it took to ``out``."""
    start = time.monotonic()
    sock.sendall(head)
    while time.monotonic() - start < 30:
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            break
        with contextlib.suppress(OSError):
            sock.sendall(piece)
    out.append((read_answer(sock), time.monotonic() - start))
    sock.close()


def upload_head(length: int = 5_000_000) -> bytes:
    return (
        f"POST /v1/analyze HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def run_attack(targets: list) -> list[threading.Thread]:
    threads = [threading.Thread(target=trickle, args=args, daemon=True) for args in targets]
    for thread in threads:
        thread.start()
    return threads


def test_slow_uploads_get_408_while_photos_and_webcam_frames_get_200(server, photo):
    port, log = server
    answers: list = []
    # 12 addresses, each one upload trickling 10 bytes every 0.3 s (about 33 bytes/s)
    sockets = [connect(port, f"127.0.1.{k + 1}") for k in range(12)]
    threads = run_attack([(s, upload_head(), b"\xff" * 10, 0.3, answers) for s in sockets])
    time.sleep(0.3)
    frames = honest(port)
    statuses = [post_photo(frames, photo) for _ in range(5)]  # webcam-like, one connection
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 5
    assert len(answers) == 12
    for answer, seconds in answers:
        assert_error(answer, 408, "timeout")
        assert GRACE <= seconds < GRACE + 2.0  # cut soon after the grace, not at a whole-body limit
    assert "slower than 1000 bytes/s" in parse(answers[0][0])[2]["error"]["message"]
    wait_for_log(log, "slower than 1000 bytes/s", 12)


def wait_for_log(log: Path, text: str, count: int) -> None:
    """The server's log has exactly ``count`` lines with ``text`` (each refusal logged once)."""
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in log.read_text().splitlines() if text in line]
        if len(found) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(found) == count, found


def test_an_upload_that_stops_gets_408(server, photo):
    port, _ = server
    sock = connect(port, "127.0.1.100")
    start = time.monotonic()
    sock.sendall(upload_head(200_000) + b"\xff" * 100_000)  # a fast start, then nothing
    answer = read_answer(sock)
    seconds = time.monotonic() - start
    sock.close()
    headers = assert_error(answer, 408, "timeout")
    assert headers["connection"] == "close"
    assert "sent nothing for 1.5 s" in parse(answer)[2]["error"]["message"]
    assert READ_TIMEOUT <= seconds < READ_TIMEOUT + 2.0


def test_an_upload_that_starts_fast_then_trickles_gets_408(server):
    port, _ = server
    answers: list = []
    sock = connect(port, "127.0.1.101")
    head = upload_head(5_000_000) + b"\xff" * 200_000  # 200 s of credit at 1000 bytes/s
    trickle(sock, head, b"\xff" * 10, 0.3, answers)
    [(answer, seconds)] = answers
    assert_error(answer, 408, "timeout")
    assert "slower than 1000 bytes/s" in parse(answer)[2]["error"]["message"]
    assert seconds < READ_TIMEOUT + 2.0  # no more than --read-timeout banked


def test_slow_headers_get_408(server, photo):
    port, log = server
    answers: list = []
    sockets = [connect(port, f"127.0.2.{k + 1}") for k in range(8)]
    head = b"POST /v1/analyze HTTP/1.1\r\nHost: test\r\n"
    threads = run_attack([(s, head, b"X", 0.2, answers) for s in sockets])
    with contextlib.closing(honest(port)) as connection:
        assert post_photo(connection, photo) == 200
    for thread in threads:
        thread.join(30)
    for answer, seconds in answers:
        assert_error(answer, 408, "timeout")
        assert HEADER_TIMEOUT - 0.5 <= seconds < HEADER_TIMEOUT + 2.0  # timed from connecting
    wait_for_log(log, "headers took over", 8)


def test_idle_connections_are_closed_and_photos_get_200(server, photo):
    port, _ = server
    idle = [connect(port, f"127.0.3.{k % 50 + 1}") for k in range(100)]
    start = time.monotonic()
    with contextlib.closing(honest(port)) as connection:
        assert post_photo(connection, photo) == 200
        connection.request("GET", "/healthz")
        assert json.loads(connection.getresponse().read()) == {"status": "ok"}
    answers = [read_answer(sock) for sock in idle]
    seconds = time.monotonic() - start
    for sock in idle:
        sock.close()
    assert answers == [b""] * 100  # closed quietly: no request, nothing to answer
    assert seconds < HEADER_TIMEOUT + 3.0


def test_too_many_connections_from_one_address_get_429(server, photo):
    port, _ = server
    held = [connect(port, "127.0.4.1") for _ in range(CLIENT_CONNECTIONS)]
    time.sleep(0.2)  # the server has accepted them
    extra = connect(port, "127.0.4.1")
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    headers = assert_error(read_answer(extra), 429, "too_many_requests")
    assert int(headers["retry-after"]) >= 1
    extra.close()
    with contextlib.closing(honest(port)) as connection:
        assert post_photo(connection, photo) == 200  # another address is not refused
    for sock in held:
        sock.close()
    time.sleep(0.2)
    again = connect(port, "127.0.4.1")
    again.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    assert parse(read_answer(again))[0] == 200
    again.close()


def test_too_many_uploads_from_one_address_get_429(server, photo):
    port, _ = server
    answers: list = []
    slow = [connect(port, "127.0.5.1") for _ in range(CLIENT_UPLOADS)]
    threads = run_attack([(s, upload_head(), b"\xff" * 10, 0.3, answers) for s in slow])
    time.sleep(0.3)
    third = connect(port, "127.0.5.1")
    third.sendall(upload_head(len(photo)).replace(b"jpeg", b"png") + photo)
    headers = assert_error(read_answer(third), 429, "too_many_requests")
    assert int(headers["retry-after"]) >= 1
    third.close()
    with contextlib.closing(honest(port)) as connection:
        assert post_photo(connection, photo) == 200
    for thread in threads:
        thread.join(30)
    assert [parse(answer)[0] for answer, _ in answers] == [408] * CLIENT_UPLOADS


def test_a_slow_body_to_any_endpoint_gets_408(server):
    port, _ = server
    answers: list = []
    sock = connect(port, "127.0.6.1")
    head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n"
    trickle(sock, head, b"x", 0.3, answers)  # a body nobody reads must not hold the connection
    [(answer, seconds)] = answers
    assert_error(answer, 408, "timeout")
    assert seconds < GRACE + 2.0


def test_headers_over_the_limit_get_431(server):
    port, _ = server
    sock = connect(port, "127.0.6.2")
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 20_000)
    assert_error(read_answer(sock), 431, "headers_too_large")
    sock.close()
