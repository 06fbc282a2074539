"""Stand-in for ExecuTorch's ``executor_runner`` on the fake phone: runs the real .pte on the host and logs in
the real runner's format. Knobs: FAKE_RUNNER_CRASH_AFTER / FAKE_RUNNER_HANG_AFTER (iterations), and
FAKE_RUNNER_HEAT (raise the phone's thermal status by one)."""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from pathlib import Path

START = time.monotonic()


def log(line: int, message: str) -> None:
    t = time.monotonic() - START
    print(
        f"I {int(t // 3600):02d}:{int(t // 60) % 60:02d}:{t % 60:09.6f} executorch:executor_runner.cpp:{line}] "
        f"{message}",
        flush=True,
    )


def hang_until_the_log_reader_is_gone(limit_seconds: float = 600.0) -> None:
    """Hang as a stuck runner does, but end once nobody reads the log: on a phone the shell's hang-up kills the
    runner when adb's connection closes; here the bench's timeout closes the pipe and this process would
    otherwise outlive the test by minutes."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLERR | select.POLLHUP)
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        if poller.poll(500):  # POLLERR on a pipe's write end: its read end is closed
            sys.exit(129)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", default="model.pte")
    parser.add_argument("--num_executions", type=int, default=1)
    parser.add_argument("--cpu_threads", type=int, default=-1)
    args = parser.parse_args()
    import torch
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    if args.cpu_threads > 0:
        _unsafe_reset_threadpool(args.cpu_threads)
    program = Runtime.get().load_program(args.model_path)
    log(203, f"Model file {args.model_path} is loaded.")
    log(212, "Using method forward")
    method = program.load_method("forward")
    log(282, "Method loaded.")
    shape = method.metadata.input_tensor_meta(0).sizes()
    inputs = [torch.ones(shape)]
    log(320, "Inputs prepared.")
    crash = int(os.environ.get("FAKE_RUNNER_CRASH_AFTER", "0"))
    hang = int(os.environ.get("FAKE_RUNNER_HANG_AFTER", "0"))
    total = 0.0
    for i in range(1, args.num_executions + 1):
        t0 = time.perf_counter()
        method.execute(inputs)
        ms = (time.perf_counter() - t0) * 1e3
        total += ms
        log(340, f"Iteration {i} of {args.num_executions}: {ms:.6f} ms")
        if crash and i == crash:
            os.abort()
        if hang and i == hang:
            hang_until_the_log_reader_is_gone()
    log(355, f"Model executed successfully {args.num_executions} time(s) in {total:.6f} ms.")
    log(358, "1 outputs: ")
    print("Output 0: tensor(sizes=[1, 10], [...])")
    if os.environ.get("FAKE_RUNNER_HEAT"):
        root = Path(os.environ["FAKE_ANDROID_ROOT"])
        status = root / ".thermal_status"
        status.write_text(str((int(status.read_text()) if status.exists() else 0) + 1))


if __name__ == "__main__":
    sys.exit(main())
