"""The commands' allocator setting (elmbridge.allocator): freed memory kept for reuse."""

import ctypes
import os
import subprocess
import sys

import pytest

import elmbridge.cli
from elmbridge.allocator import keep_freed_memory


def has_mallopt() -> bool:
    try:
        ctypes.CDLL(None).mallopt  # noqa: B018
    except (OSError, AttributeError):
        return False
    return sys.platform.startswith("linux")


# Three 20 MB blocks (a step's sequences) allocated, written and freed, ten times over;
# prints the page faults of the last nine rounds.
ROUNDS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from elmbridge.allocator import keep_freed_memory
    assert keep_freed_memory()
def round_():
    blocks = [np.empty(5 << 20, dtype=np.float32) for _ in range(3)]
    for b in blocks:
        b.fill(1.0)
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not has_mallopt(), reason="glibc's mallopt is Linux/glibc only")
def test_kept_memory_is_reused_without_page_faults():
    """With the setting, memory freed by one round is taken again by the next without a
    page fault (nine rounds of 60 MB: 135k pages of 4 KiB if every one were new); glibc's
    default hands much of it back to the kernel at every round (about 14k faults here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def faults(mode):
        out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True,
                             text=True, check=True, env=env)  # fmt: skip
        return int(out.stdout.strip())

    kept, plain = faults("keep"), faults("plain")
    assert kept < 1000, kept
    assert plain > 5 * kept + 5000, (plain, kept)


def test_the_users_own_allocator_settings_stand(monkeypatch):
    """An allocator setting in the environment is the user's choice: left alone."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False


def test_every_command_keeps_freed_memory(monkeypatch):
    """run_cli, the entry point of every command, makes the setting before main runs."""
    order = []
    monkeypatch.setattr(elmbridge.cli, "keep_freed_memory", lambda: order.append("keep"))
    with pytest.raises(SystemExit) as exit_:
        elmbridge.cli.run_cli(lambda argv: order.append("main"), [])
    assert exit_.value.code == 0
    assert order == ["keep", "main"]
