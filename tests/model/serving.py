"""``campfire serve`` as a subprocess on loopback, for tests that serve a prepared or fine-tuned folder."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


@contextlib.contextmanager
def campfire_serve(data_dir: Path, model: str, *, timeout_s: float = 180.0, args: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Run ``campfire serve --data-dir DATA_DIR --model MODEL`` (plus ``args``) on a free loopback port,
    without the caller's ``CAMPFIRE_*`` variables, and yield ``{"url", "model"}`` (the base URL and the
    id ``/v1/models`` lists) once ``/health`` answers 200 (AssertionError with its output when it exits
    first; TimeoutError after ``timeout_s`` s). On leaving it is terminated, and ``"output"`` holds its
    stdout and stderr."""
    from model.server import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPFIRE_")} | {"HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "campfire.cli", "serve", "--data-dir", str(data_dir), "--model", model, "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=data_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served: dict[str, Any] = {"url": f"http://127.0.0.1:{port}"}
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, proc.stdout.read()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(served["url"] + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"campfire serve did not answer /health within {timeout_s:.0f} s")
            time.sleep(0.5)
        served["model"] = httpx.get(served["url"] + "/v1/models", timeout=10).json()["data"][0]["id"]
        yield served
    finally:
        proc.terminate()
        served["output"] = proc.communicate(timeout=30)[0]
