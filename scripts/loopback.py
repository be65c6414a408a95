"""What the loopback scripts share (`mixed_versions.py`,
`dashboard_browser.py`): a free port, and stopping a node as a user does."""

import signal
import socket
import subprocess


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    """SIGTERM, as `systemctl stop` sends, then SIGKILL if it does not end
    within 20 s."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
