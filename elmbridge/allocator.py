"""The C allocator's settings for the toolkit's commands: freed memory kept for reuse.

A training step allocates its per-step sequences and gradients afresh and frees them at
the end: about 40 MB a call for the Enwik8 network at batch 1 (T 100). glibc's malloc
returns freed memory at the top of its heap to the kernel once it passes a trim
threshold, so the next call gets it back as new pages, each zeroed by the kernel on its
first touch: 8k page faults and 17 ms of system time a call, 12 % of that step's CPU
time. With the memory kept, the faults fall to about 200 a call.

`keep_freed_memory` is process-wide, so the library never calls it on import; every
command does, through `elmbridge.cli.run_cli`, and so does each sweep point on a Dask
worker (`elmbridge.sweep`). A notebook or script can call it itself.
"""

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): blocks
# above it are mapped on their own and unmapped when freed whatever is set here, and the
# largest of them (cpp_loop's huge-page sequences, from 64 MB) want exactly that.
MMAP_THRESHOLD_BYTES = 32 << 20
# The most free memory the heap keeps at its top before returning it to the kernel.
KEEP_BYTES = 512 << 20
# The user's own settings of the same, which take precedence.
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory(keep_bytes: int = KEEP_BYTES) -> bool:
    """Let glibc's malloc keep up to `keep_bytes` (bytes) of freed memory on its heap, and
    serve blocks up to 32 MB from there, instead of returning them to the kernel.

    The process's resident memory then stays near its peak (plus at most `keep_bytes`)
    after a large step has freed its buffers; the memory is reused by later allocations.
    Nothing changes, and the return value is False, off Linux, without glibc, or when the
    environment already sets MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TOP_PAD_ (the user's choice stands).

    Example:
        >>> from elmbridge.allocator import keep_freed_memory
        >>> keep_freed_memory()  # doctest: +SKIP
        True
    """
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first: setting it also fixes the
    # trim threshold's dynamic adjustment off.
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, min(int(keep_bytes), 2**31 - 1))
    )
