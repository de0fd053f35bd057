"""The compiled CPU path of the ELM memory recurrence: the time loops in C++.

`elmnet.recurrence` runs its time loops eagerly (a dozen small ATen ops per step), on
CUDA through the Triton kernels of `elmnet.fused`, or on the CPU through the C++ loops
of ``elmnet/csrc/recurrence.cpp`` that this module builds (`extension`), checks
(`why_not`) and calls (`forward_loop`, `backward`), and the two other C++ loops of
the same library: the leaky trace (`trace`) and the spike-input product
(`spike_product`), each an autograd function with its backward pass in C++. The C++
forward loops fill exactly the sequences the eager loops fill, so the saved tensors are
shared; the C++ backward sums the weight gradients itself (see `backward`).

Why: on a CPU each ATen op costs a few µs of dispatch whatever its size, and at small
batch one step's arithmetic is a few thousand FLOPs, so the eager loop's time is mostly
that fixed cost. One call into C++ runs all steps as plain pointer loops.

Build: compiled with `torch.utils.cpp_extension.load` on first use (about 5 s of CPU:
the source includes no torch header and is a plain shared library called through
ctypes; needs a C++ compiler and ninja) into ``<cache>/torch_extensions/<hash>`` under the
toolkit's cache folder (`elmbridge.download.cache_dir`), the hash covering the source,
the torch and Python versions and the CPU's instruction-set flags (the code is built for
the host CPU, -march=native), so later processes load it without compiling. When the
build fails, `extension` returns None and `build_error` says why; "auto" then stays on
the eager loop with one warning.
"""

import ctypes
import hashlib
import importlib.util
import mmap
import platform
import shutil
import sys
import threading
import weakref
from pathlib import Path

import torch

from elmbridge.download import cache_dir

# recurrence.cpp's kMaskWords (32-bit lane masks per gather-list entry) and vector width
# in bytes (kVecLanes = 64 / sizeof(T), whatever the instruction set).
_MASK_WORDS, _VECTOR_BYTES = 4, 64
# Activation codes shared with the C++ source.
_ACT = {"identity": 0, "relu": 1, "relu2": 2, "silu": 3}
SOURCE = Path(__file__).with_name("csrc") / "recurrence.cpp"
# -ffp-contract=fast: fused multiply-adds (one rounding instead of two, never worse).
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=fast", "-std=c++17"]

_state: dict = {"module": None, "error": None, "tried": False}
_lock = threading.Lock()


def _cpu_flags() -> str:
    """The host CPU's instruction-set flags (Linux), so a cache shared between different
    CPUs never loads code built for another one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def build_key() -> str:
    """Hash naming the build folder and module: source, flags, versions, CPU."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    for part in (*FLAGS, torch.__version__, sys.version, platform.machine(), _cpu_flags()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


# Large sequences on huge pages. A training step of the Enwik8 network allocates about
# 7 GB of fresh (T, N, B, ·) sequences at batch 64 (T 100); each arrives as new memory
# from the kernel, touched first by the loops, and at 4 KiB per page fault the faults
# took 30 % of the step's CPU time (2.2 of 7 s, all system time). Transparent huge pages
# on "madvise" (the common default) are used only where asked for: advising a fresh
# tensor's range before it is written makes each fault map 2 MiB.
_MADV_HUGEPAGE = 14  # Linux
# Only blocks glibc maps on their own (it does so for anything over 32 MB, its largest
# dynamic mmap threshold): advice on a smaller block, carved from the heap, would outlive
# the tensor and put later small allocations there on huge pages too.
_HUGE_MIN_BYTES = 64 << 20
_libc: dict = {}


def _advise_huge(x: torch.Tensor) -> None:
    if "madvise" not in _libc:
        _libc["madvise"] = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                _libc["madvise"] = fn
            except (OSError, AttributeError):
                pass
    madvise = _libc["madvise"]
    if madvise is None:
        return
    page = mmap.PAGESIZE
    start = (x.data_ptr() + page - 1) // page * page
    end = (x.data_ptr() + x.nbytes) // page * page
    if end > start:
        madvise(start, end - start, _MADV_HUGEPAGE)  # advice only: failure changes nothing


def empty(like: torch.Tensor, *shape: int) -> torch.Tensor:
    """`like.new_empty(shape)`, on transparent huge pages when it is a large CPU tensor."""
    x = like.new_empty(shape)
    if x.device.type == "cpu" and x.nbytes >= _HUGE_MIN_BYTES:
        _advise_huge(x)
    return x


def compiler_missing() -> str | None:
    """Why the extension cannot be built here (no compiler, no ninja), or None."""
    if not (shutil.which("c++") or shutil.which("g++")):
        return "no C++ compiler (c++ or g++) on PATH"
    if importlib.util.find_spec("ninja") is None and shutil.which("ninja") is None:
        return "ninja is not installed (needed by torch's C++ extension builder)"
    return None


def extension():
    """The compiled module (built or loaded on first call), or None if it cannot be
    built; `build_error()` then says why."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            _state["error"] = compiler_missing()
            if _state["error"] is None:
                try:
                    _state["module"] = _build()
                except Exception as error:  # a failed build must not stop the eager path
                    lines = str(error).strip().splitlines() or [type(error).__name__]
                    _state["error"] = f"building {SOURCE.name} failed: {lines[0]}"
        return _state["module"]


def build_error() -> str | None:
    """Why `extension()` returned None, or None when it built (or was not tried)."""
    return _state["error"]


def _build():
    from torch.utils import cpp_extension

    key = build_key()
    folder = cache_dir("torch_extensions", key)
    # A plain shared library (no Python module, no torch headers): torch's builder
    # compiles it (with its locking of the build folder) and returns its path.
    path = cpp_extension.load(
        name=f"elmnet_recurrence_{key}",
        sources=[str(SOURCE)],
        extra_cflags=FLAGS,
        build_directory=str(folder),
        is_python_module=False,
        verbose=False,
    )
    lib = ctypes.CDLL(path)
    lib.elm_args_size.restype = ctypes.c_int64
    if lib.elm_args_size() != ctypes.sizeof(_Args):
        raise RuntimeError("ElmArgs in recurrence.cpp and _Args in cpp_loop.py differ")
    # bank_forward dispatches between the two loops named after it, backward and
    # bank_backward between the last two (batch thresholds); each alone is for tests and
    # timings.
    loops = ["forward", "bank_forward", "backward", "bank_backward"]
    loops += ["bank_forward_lanes", "bank_forward_batch_inner"]
    loops += ["bank_backward_lanes", "bank_backward_batch_inner"]
    for name in (f"elm_{loop}_{suffix}" for loop in loops for suffix in ("f32", "f64")):
        getattr(lib, name).argtypes = [ctypes.POINTER(_Args)]
        getattr(lib, name).restype = None
    for suffix in ("f32", "f64"):
        for name in ("elm_backward_on_lanes", "elm_lane_weights"):
            function = getattr(lib, f"{name}_{suffix}")
            function.argtypes, function.restype = [ctypes.POINTER(_Args)], ctypes.c_int64
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    signatures = {
        "elm_trace_forward": (None, [i64] * 3 + [ptr] * 4),
        "elm_trace_backward": (None, [i64] * 3 + [ptr] * 7),
        "elm_spike_product": (i64, [i64] * 3 + [ptr] * 5 + [i64]),
        "elm_spike_product_grad": (None, [i64] * 3 + [ptr] * 5),
        "elm_bank_pre": (None, [i64] * 6 + [ptr] * 3),
        "elm_bank_pre_grad": (None, [i64] * 6 + [ptr] * 3),
        "elm_token_grad": (None, [i64] * 5 + [ptr] * 3),
        "elm_lane_layout": (i64, [i64] * 2 + [ptr] * 6),
        "elm_recurrent_values": (None, [i64] * 2 + [ptr] * 3 + [ctypes.c_double, ptr]),
        "elm_recurrent_values_grad": (None, [i64] * 2 + [ptr] * 3 + [ctypes.c_double, ptr]),
        "elm_ff_matrix": (None, [i64] * 5 + [ptr] * 7 + [ctypes.c_double, ptr, ptr]),
        "elm_ff_matrix_grad": (None, [i64] * 7 + [ptr] * 7 + [ctypes.c_double] + [ptr] * 4),
    }
    lib.elm_tanh_f32.argtypes, lib.elm_tanh_f32.restype = [i64, ptr, ptr], None
    for suffix in ("f32", "f64"):
        function = getattr(lib, f"elm_weight_grads_{suffix}")
        function.argtypes = [ctypes.POINTER(_Args), ctypes.POINTER(_Grads)]
        function.restype = None
    for name, (restype, argtypes) in signatures.items():
        suffixes = ("f32", "f64", "f32_i8", "f64_i8") if "spike" in name else ("f32", "f64")
        for suffix in suffixes:
            function = getattr(lib, f"{name}_{suffix}")
            function.argtypes, function.restype = argtypes, restype
    return lib


_SIZES = ("n_steps", "n", "batch", "d_m", "n_layers", "act", "d_tree", "feedback")
_POINTERS = (
    "widths kappa gain u weights acts pre memory biases memories mlp_out "
    "grad_memories grad_mlp_out grad_z grad_acts grad_kappa grad_gain carry values crow col "
    "w_branch w_y beta drop highpass0 output0 outputs highpasses grad_outputs grad_highpasses "
    "grad_y grad_r grad_branches carry_out carry_highpass tokens grads lanes lanes_t "
    "lane_weights"
).split()


class _Args(ctypes.Structure):
    """Mirror of `ElmArgs` in recurrence.cpp (same order; checked by size at load)."""

    _fields_ = [
        *((name, ctypes.c_int64) for name in _SIZES),
        ("kappa_r", ctypes.c_double),
        *((name, ctypes.c_void_p) for name in _POINTERS),
    ]


class _LaneLayout(ctypes.Structure):
    """Mirror of `LaneLayout` in recurrence.cpp (same order)."""

    _fields_ = [("size", ctypes.c_int64)] + [
        (name, ctypes.c_void_p) for name in ("first", "index", "masks", "pos")
    ]


# Lane layouts by the pattern's col tensor (a bank's buffer, the same object every call),
# dropped with it: id(col) → (weak reference to col, {(dtype, d_tree, transposed):
# (versions, tensors, struct)}). (A WeakKeyDictionary compares tensors with ==.)
_LAYOUTS: dict[int, tuple] = {}


def lane_layout(crow: torch.Tensor, col: torch.Tensor, n: int, d_tree: int,
                dtype: torch.dtype, transposed: tuple | None = None) -> _LaneLayout:  # fmt: skip
    """The layout of the lanes loops' gather lists for the recurrent synapse matrix S of
    (crow, col) (int32 CSR of N·d_tree rows), for `dtype`'s vector lanes: S's lists (padded
    per group of L neurons), or with `transposed` = the pattern's (crow_t, col_t, perm_t)
    Sᵀ's rows as they are, one per source, each entry reading its row's ∂L/∂c in the
    reverse-time loop's lane layout (groups, d_tree, L). Built once per pattern and kept
    while `col` lives: it depends on the pattern alone, and built in every call it had been
    most of a one-step call's forward at Enwik8's batch 1. Checked against the tensors'
    addresses and version counters."""
    key = (dtype, d_tree, transposed is not None)
    tensors_in = (crow, col, *(transposed or ()))
    versions = (n, *((t.data_ptr(), t._version) for t in tensors_in))
    slot = id(col)
    ref, kept = _LAYOUTS.get(slot, (None, None))
    if ref is None or ref() is not col:
        ref = weakref.ref(col, lambda _: _LAYOUTS.pop(slot, None))
        _LAYOUTS[slot] = ref, (kept := {})
    if key in kept and kept[key][0] == versions:
        return kept[key][2]
    lanes = _VECTOR_BYTES // dtype.itemsize
    if transposed is not None:
        # Sᵀ's rows as they are, one per source: the forward pushes the active sources
        # along them and the reverse-time loop sums along them, both skipping the silent
        # ones, which lists padded over L sources at a time could not do.
        crow_t, col_t, perm_t = transposed
        neuron, branch = col_t.long() // d_tree, col_t.long() % d_tree
        index = ((neuron // lanes) * d_tree + branch) * lanes + neuron % lanes
        pos = torch.empty(col.numel(), dtype=torch.int32)
        pos[perm_t.long()] = torch.arange(col.numel(), dtype=torch.int32)
        tensors = (crow_t.to(torch.int64).contiguous(), index.to(torch.int32), pos)
        layout = _LaneLayout(col.numel(), _ptr(tensors[0]), _ptr(tensors[1]), None,
                             _ptr(pos))  # fmt: skip
        kept[key] = (versions, tensors, layout)
        return layout
    function = _typed("elm_lane_layout", dtype)
    args = (n, d_tree, _ptr(crow), _ptr(col))
    size = function(*args, None, None, None, None)
    tensors = (
        torch.empty(-(-n // lanes) * d_tree + 1, dtype=torch.int64),
        torch.zeros(size, dtype=torch.int32),
        torch.zeros(size // lanes * _MASK_WORDS, dtype=torch.int32),  # uint32 in C++
        torch.empty(col.numel(), dtype=torch.int32),
    )
    function(*args, *map(_ptr, tensors))
    layout = _LaneLayout(size, *map(_ptr, tensors))
    kept[key] = (versions, tensors, layout)
    return layout


class _Grads(ctypes.Structure):
    """Mirror of `ElmGrads` in recurrence.cpp (same order)."""

    _fields_ = [
        (name, ctypes.c_void_p)
        for name in (
            "grad_u grad_weights grad_biases grad_values grad_w_branch grad_w_y grad_beta "
            "grad_table"
        ).split()
    ]


class _Call:
    """Builds one `_Args`, keeping alive every tensor and pointer array it points into
    until the call returns."""

    def __init__(self, spec, **sizes):
        self.keep = []
        self.args = _Args(act=_ACT[spec.activation], d_tree=spec.d_tree,
                          feedback=int(spec.feedback), kappa_r=float(spec.kappa_r),
                          **sizes)  # fmt: skip

    def set(self, **tensors):
        args, keep = self.args, self.keep
        for name, x in tensors.items():
            if x is None:
                continue
            if isinstance(x, (list, tuple)):
                held = (None if t is None else self._hold(t) for t in x)  # None: null
                array = (ctypes.c_void_p * max(1, len(x)))(*held)
                keep.append(array)
                setattr(args, name, ctypes.addressof(array))
            elif isinstance(x, ctypes.Array):  # already a C array (the widths)
                keep.append(x)
                setattr(args, name, ctypes.addressof(x))
            else:
                setattr(args, name, self._hold(x))

    def set_lanes(self, name: str, layout: _LaneLayout) -> None:
        """One of the lanes loops' layouts of S (`lane_layout`): "lanes", S's gather lists,
        or "lanes_t", Sᵀ's rows."""
        self.keep.append(layout)
        setattr(self.args, name, ctypes.addressof(layout))

    def _hold(self, x: torch.Tensor) -> int:
        if not x.is_contiguous():
            raise ValueError("the C++ loops take contiguous tensors only")
        self.keep.append(x)
        return x.data_ptr()

    def run(self, direction: str, dtype: torch.dtype):
        suffix = "f64" if dtype == torch.float64 else "f32"
        getattr(extension(), f"elm_{direction}_{suffix}")(ctypes.byref(self.args))


def why_not(pre: torch.Tensor, activation: str) -> str | None:
    """Why the C++ loops cannot run this recurrence (device, dtype, activation), or None
    when they can, before any build."""
    if pre.device.type != "cpu":
        return f"tensors on {pre.device.type}: the C++ loops run on the CPU"
    if pre.dtype not in (torch.float32, torch.float64):
        return f"the C++ loops compute in float32 or float64, not {pre.dtype}"
    if activation not in _ACT:
        return f"activation {activation!r} has no C++ loop"
    return None


def unavailable(device: torch.device, dtype: torch.dtype, activation: str) -> str | None:
    """Why the C++ loops cannot run a recurrence of this kind here, building them if
    needed, or None when they can."""
    reason = why_not(torch.empty(0, device=device, dtype=dtype), activation)
    if reason is None and extension() is None:
        reason = build_error()
    return reason


def _per_state(x: torch.Tensor, n: int, batch: int, width: int) -> torch.Tensor:
    """A coefficient broadcastable to (N, B, width), materialised contiguous."""
    return torch.broadcast_to(x, (n, batch, width)).contiguous()


def _widths(d_a: int, weights, d_m: int) -> ctypes.Array:
    widths = [d_a, *(w.shape[-1] for w in weights[:-1]), d_m]
    return (ctypes.c_int64 * len(widths))(*widths)


def forward_loop(spec, pre, memory, u, kappa, gain, layers, acts, memories, mlp_out, fb=None,
                 tokens=None, keep_weights=False):  # fmt: skip
    """The forward time loop in C++, filling `acts` (when non-empty), `memories` and
    `mlp_out` in place, as `elmnet.recurrence._eager_forward` does.

    fb: None or (values, crow, col, crow_t, col_t, perm_t, w_branch, w_y, beta, drop,
    highpass, output, outputs, highpasses), the last two filled in place. tokens: None, or
    (with fb) the `elmnet.recurrence.TokenRows` the loop reads pre from, `pre` then giving
    only the shape.

    Returns None, or with `keep_weights` where the reverse-time loop will run on lanes
    too, the weights as the lanes loops lay them out, for `backward` (`lane_weights`):
    laid out again there, they had cost 1.5 ms of an Enwik8 training call at batch 1.
    """
    n_steps, n, batch, d_a = pre.shape
    d_m = memory.shape[-1]
    weights = [w.contiguous() for w, _ in layers]
    biases = [_per_state(b, n, batch, w.shape[-1]) for w, b in layers]
    call = _Call(spec, n_steps=n_steps, n=n, batch=batch, d_m=d_m, n_layers=len(layers))
    if tokens is not None:
        if fb is None:
            raise ValueError("token rows are read in place by the bank loops only")
        pre = tokens.table.contiguous()
        call.set(tokens=tokens.tokens.to(torch.int64).contiguous())
    call.set(
        widths=_widths(d_a, weights, d_m), pre=pre.contiguous(), memory=memory.contiguous(),
        u=u.contiguous(), kappa=_per_state(kappa, n, batch, d_m),
        gain=_per_state(gain, n, batch, d_m), weights=weights,
        biases=biases,
        acts=acts or None, memories=memories, mlp_out=mlp_out,
    )  # fmt: skip
    if fb is not None:
        (values, crow, col, crow_t, col_t, perm_t, w_branch, w_y, beta, drop, highpass, output,
         outputs, hps) = fb  # fmt: skip
        crow, col = crow.to(torch.int32).contiguous(), col.to(torch.int32).contiguous()
        call.set_lanes("lanes", lane_layout(crow, col, n, spec.d_tree, pre.dtype))
        transposed = (crow_t, col_t, perm_t)
        call.set_lanes("lanes_t", lane_layout(crow, col, n, spec.d_tree, pre.dtype, transposed))
        call.set(
            values=values.contiguous(), crow=crow, col=col, w_branch=w_branch.contiguous(),
            w_y=w_y.contiguous(), beta=torch.broadcast_to(beta, (n,)).contiguous(),
            drop=None if drop is None else drop.contiguous(), highpass0=highpass.contiguous(),
            output0=output.contiguous(), outputs=outputs, highpasses=hps,
        )  # fmt: skip
    lane_weights = None
    if keep_weights:
        suffix = "f64" if pre.dtype == torch.float64 else "f32"
        size = getattr(extension(), f"elm_lane_weights_{suffix}")(ctypes.byref(call.args))
        if size:
            lane_weights = pre.new_empty(size)
            call.set(lane_weights=lane_weights)
    # The C++ side picks the loop: at batch up to half a vector, the one with neurons
    # across the vector lanes for a bank (with feedback, the network's recurrent layer; or
    # without, its readout); else, with feedback the batch-inner bank loop, without (and
    # for a single neuron) the register-tiled one.
    call.run("bank_forward" if fb is not None else "forward", pre.dtype)
    return lane_weights


def _backward_on_lanes(call: _Call, suffix: str) -> bool:
    """Whether the C++ dispatch will run the bank's lanes reverse-time loop for `call`
    (recurrence.cpp keeps the thresholds)."""
    return bool(getattr(extension(), f"elm_backward_on_lanes_{suffix}")(ctypes.byref(call.args)))


def backward(spec, saved_tensors, shapes, grad_memories, grad_mlp_out, grad_feedback,
             tokens=None, table_rows=0, want_pre=True, lane_weights=None):  # fmt: skip
    """The reverse-time loop and the weight gradients in C++, on one set of arguments:
    what `elmnet.recurrence._Recurrence.backward` returns for `pre` and the inputs after
    it (`shapes` its ctx.shapes), as `_eager_backward` and `_weight_grads` compute it.
    ∂L/∂pre comes first: with `tokens` the (table_rows, d_a) gradient of the token table
    `pre` was, None where not `want_pre`.

    The weight gradients are plain C++ loops, not a score of ATen ops: at small batch their
    dispatch was most of a small network's backward pass, and at batch 64 their layout
    copies made SHD-Adding's training step twice as long (1.0 vs 0.5 s). Where the bank's
    batch-inner loop runs, it sums them itself, step by step (`ElmArgs::grads`), and the
    per-step gradients they come from are never stored; after the other loops
    `weight_grads` sums them from the stored ones. `lane_weights`: what `forward_loop`
    returned, read by the lanes loop instead of laying the weights out again."""
    n_layers = spec.n_layers
    memory, u, kappa, gain, memories, mlp_out, *rest = saved_tensors
    acts, weights = rest[:n_layers], rest[n_layers : 2 * n_layers]
    n_steps, n, batch, d_m = memories.shape
    d_a = u.shape[-1]
    suffix = "f64" if memories.dtype == torch.float64 else "f32"
    call = _Call(spec, n_steps=n_steps, n=n, batch=batch, d_m=d_m, n_layers=n_layers)
    on_lanes = _backward_on_lanes(call, suffix)
    in_loop = spec.feedback and not on_lanes

    def oriented(w):  # the lanes loop reads the weights as the forward does, the others Wᵀ
        return w.contiguous() if on_lanes else w.transpose(1, 2).contiguous()

    # Summed in the loop, the per-step gradients are stored only for ∂L/∂pre (∂L/∂a⁰, the
    # last of them: grad_acts[0], or ∂L/∂z without layers), and not for a token table.
    keep_pre = want_pre and tokens is None

    def stored(like, level):
        if in_loop and (level > 0 or not keep_pre):
            return None
        return empty(like, *like.shape)

    grad_z = stored(mlp_out, n_layers)
    grad_acts = [stored(a, level) for level, a in enumerate(acts)]
    new = memories.new_empty
    grad_kappa, grad_gain = memories.new_zeros(n, batch, d_m), memories.new_zeros(n, batch, d_m)
    carry = memory.new_zeros(n, batch, d_m)

    def maybe(x):
        return None if x is None else x.contiguous()

    widths = _widths(d_a, weights, d_m)
    call.set(
        widths=widths, u=oriented(u),
        kappa=_per_state(kappa, n, batch, d_m), gain=_per_state(gain, n, batch, d_m),
        weights=[oriented(w) for w in weights],
        acts=[a.contiguous() for a in acts] or None, mlp_out=mlp_out.contiguous(),
        grad_memories=maybe(grad_memories), grad_mlp_out=maybe(grad_mlp_out), grad_z=grad_z,
        grad_acts=grad_acts or None, grad_kappa=grad_kappa, grad_gain=grad_gain, carry=carry,
        memory=memory.contiguous(), memories=memories.contiguous(),
        lane_weights=lane_weights if on_lanes else None,
    )  # fmt: skip

    kappa_shape, gain_shape, *bias_shapes = shapes
    grad_u = new(n, d_m, d_a)
    grad_weights = [new(n, widths[i], widths[i + 1]) for i in range(n_layers)]
    grad_biases = [new(n, batch, widths[i + 1]) for i in range(n_layers)]
    out = _Grads(grad_u=grad_u.data_ptr())
    for name, xs in (("grad_weights", grad_weights), ("grad_biases", grad_biases)):
        array = (ctypes.c_void_p * max(1, len(xs)))(*(x.data_ptr() for x in xs))
        call.keep.append(array)
        setattr(out, name, ctypes.addressof(array))
    grad_table = None
    if spec.feedback:
        values, crow, col, crow_t, col_t, perm_t, w_branch, w_y, drop, outputs, output0 = rest[
            2 * n_layers :
        ]
        grad_outputs, grad_highpasses = grad_feedback
        grad_y, grad_r = empty(outputs, *outputs.shape), empty(outputs, *outputs.shape)
        grad_values = torch.empty_like(values)
        # ∂L/∂c of every step, for weight_grads after the lanes loop (the batch-inner loop
        # keeps a neuron's step).
        grad_branches = None if in_loop else empty(outputs, n_steps, n, spec.d_tree, batch)
        carry_out, carry_highpass = outputs.new_zeros(n, batch), outputs.new_zeros(n, batch)
        crow, col = crow.to(torch.int32).contiguous(), col.to(torch.int32).contiguous()
        if not in_loop:
            transposed = (crow_t, col_t, perm_t)
            call.set_lanes(
                "lanes_t", lane_layout(crow, col, n, spec.d_tree, memories.dtype, transposed)
            )
        call.set(
            values=values.contiguous(), crow=crow, col=col,
            w_branch=oriented(w_branch),
            w_y=w_y.contiguous(), drop=maybe(drop), outputs=outputs.contiguous(),
            grad_outputs=maybe(grad_outputs), grad_highpasses=maybe(grad_highpasses),
            grad_y=grad_y, grad_r=grad_r, grad_branches=grad_branches, carry_out=carry_out,
            carry_highpass=carry_highpass, output0=output0.contiguous(),
        )  # fmt: skip
        grad_w_branch, grad_w_y, grad_beta = torch.empty_like(w_branch), new(n, d_m), new(n, batch)
        out.grad_values, out.grad_w_branch = grad_values.data_ptr(), grad_w_branch.data_ptr()
        out.grad_w_y, out.grad_beta = grad_w_y.data_ptr(), grad_beta.data_ptr()
    if in_loop:
        if tokens is not None and want_pre:
            tokens = tokens.to(torch.int64).contiguous()
            grad_table = memories.new_zeros(table_rows, d_a)
            call.set(tokens=tokens)
            out.grad_table = grad_table.data_ptr()
        call.keep.append(out)
        call.args.grads = ctypes.addressof(out)
    call.run("bank_backward" if spec.feedback else "backward", memories.dtype)
    if not in_loop:  # the weight gradients, from the per-step gradients just stored
        getattr(extension(), f"elm_weight_grads_{suffix}")(
            ctypes.byref(call.args), ctypes.byref(out)
        )

    grad_pre = (grad_acts[0] if n_layers else grad_z) if want_pre else None
    if tokens is not None and want_pre:
        grad_pre = grad_table if in_loop else token_grad(grad_pre, tokens, table_rows)
    result = [
        grad_pre,
        carry,
        grad_u,
        grad_kappa.sum_to_size(kappa_shape),
        grad_gain.sum_to_size(gain_shape),
    ]
    for layer in range(n_layers):
        result += [grad_weights[layer], grad_biases[layer].sum_to_size(bias_shapes[layer])]
    if spec.feedback:
        grad_beta = grad_beta.sum(1).sum_to_size(bias_shapes[-1])
        result += [grad_values, None, None, None, None, None, grad_w_branch, grad_w_y,
                   grad_beta, None, carry_highpass, carry_out]  # fmt: skip
    return result


def tanh_f32(x: torch.Tensor) -> torch.Tensor:
    """tanh of a float32 CPU tensor as the C++ loops (with and without feedback) compute
    the memory proposal in float32 (`tanh_vec`, a vectorised approximation within 3 ulp);
    for its accuracy test."""
    x = x.contiguous()
    y = torch.empty_like(x)
    extension().elm_tanh_f32(x.numel(), _ptr(x), _ptr(y))
    return y


def _ptr(x: torch.Tensor | None) -> int | None:
    if x is None:
        return None
    if not x.is_contiguous():
        raise ValueError("the C++ loops take contiguous tensors only")
    return x.data_ptr()


def _typed(name: str, dtype: torch.dtype, x_dtype: torch.dtype | None = None):
    suffix = "f64" if dtype == torch.float64 else "f32"
    if x_dtype is not None and x_dtype != dtype:
        suffix += "_i8"
    return getattr(extension(), f"{name}_{suffix}")


# Input dtypes the spike product reads besides m's own: int8 directly, bool as its bytes.
SPIKE_INT_DTYPES = (torch.int8, torch.bool)


class _Trace(torch.autograd.Function):
    """b_t = κ ⊙ b_{t−1} + u_t in one sequential pass each way (`elmnet.ops.exp_trace`)."""

    @staticmethod
    def forward(ctx, u, kappa, init):
        batch, steps, channels = u.shape
        u = u.contiguous()
        k = torch.broadcast_to(kappa, (channels,)).contiguous()
        init_c = None if init is None else init.contiguous()
        b = torch.empty_like(u)
        _typed("elm_trace_forward", u.dtype)(
            batch, steps, channels, _ptr(u), _ptr(k), _ptr(init_c), _ptr(b)
        )
        ctx.save_for_backward(k, b if ctx.needs_input_grad[1] else None, init_c)
        ctx.kappa_shape = kappa.shape
        return b

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_b):
        k, b, init = ctx.saved_tensors
        batch, steps, channels = grad_b.shape
        grad_b = grad_b.contiguous()
        grad_u = torch.empty_like(grad_b)
        want_init = init is not None and ctx.needs_input_grad[2]
        grad_init = grad_b.new_empty(batch, channels) if want_init else None
        grad_k = grad_b.new_zeros(channels) if ctx.needs_input_grad[1] else None
        _typed("elm_trace_backward", grad_b.dtype)(
            batch, steps, channels, _ptr(grad_b), _ptr(k), _ptr(b), _ptr(init), _ptr(grad_u),
            _ptr(grad_init), _ptr(grad_k),
        )  # fmt: skip
        if grad_k is not None:
            # A scalar or broadcast κ gets the sum over the channels it stood for.
            grad_k = grad_k.sum_to_size(ctx.kappa_shape) if ctx.kappa_shape else grad_k.sum()
        return grad_u, grad_k, grad_init


def trace(u: torch.Tensor, kappa: torch.Tensor, init: torch.Tensor | None) -> torch.Tensor:
    """The leaky trace of `elmnet.ops.exp_trace` in C++: u (B, T, C) float32/float64 on
    the CPU, κ a scalar or (C,) tensor of u's dtype, init (B, C) or None; differentiable
    in all three."""
    return _Trace.apply(u, kappa, init)


class _SpikeProduct(torch.autograd.Function):
    """X M over X's nonzeros (see `spike_product`); ctx.dense when X was too dense."""

    @staticmethod
    def forward(ctx, x, m, max_density):
        rows, n_in = x.shape
        m = m.contiguous()
        x = x.contiguous()
        raw = x.view(torch.int8) if x.dtype == torch.bool else x
        capacity = int(max_density * rows * n_in)
        y = m.new_empty(rows, m.shape[1])
        crow = torch.empty(rows + 1, dtype=torch.int64)
        col = torch.empty(capacity, dtype=torch.int32)
        nnz = _typed("elm_spike_product", m.dtype, raw.dtype)(
            rows, n_in, m.shape[1], _ptr(raw), _ptr(m), _ptr(y), _ptr(crow), _ptr(col), capacity
        )
        ctx.dense = nnz < 0
        if ctx.dense:
            y = x.to(m.dtype) @ m
            crow = col = None
        ctx.save_for_backward(raw, m, crow, col)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        raw, m, crow, col = ctx.saved_tensors
        grad_x = grad_m = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_y @ m.t()
        if ctx.needs_input_grad[1]:
            if ctx.dense:
                grad_m = raw.to(m.dtype).t() @ grad_y
            else:
                grad_y = grad_y.contiguous()
                grad_m = torch.empty_like(m)
                _typed("elm_spike_product_grad", m.dtype, raw.dtype)(
                    *raw.shape, m.shape[1], _ptr(raw), _ptr(crow), _ptr(col), _ptr(grad_y),
                    _ptr(grad_m),
                )  # fmt: skip
        return grad_x, grad_m, None


class _BankPre(torch.autograd.Function):
    """(T, B, N, d_a) drive → (T, N, B, d_a) pre-activation plus bias (see `bank_pre`)."""

    @staticmethod
    def forward(ctx, drive, bias):
        steps, batch, n, d_a = drive.shape
        ctx.batch_first = drive.transpose(0, 1).is_contiguous() and not drive.is_contiguous()
        drive = drive if ctx.batch_first else drive.contiguous()
        bias = bias.contiguous()
        out = drive.new_empty(steps, n, batch, d_a)
        _typed("elm_bank_pre", drive.dtype)(
            steps, batch, n, d_a, drive.stride(0), drive.stride(1), drive.data_ptr(),
            _ptr(bias), _ptr(out),
        )  # fmt: skip
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        steps, n, batch, d_a = grad.shape
        grad = grad.contiguous()
        grad_drive = None
        if ctx.needs_input_grad[0]:  # laid out as the drive was
            if ctx.batch_first:
                grad_drive = grad.new_empty(batch, steps, n, d_a).transpose(0, 1)
            else:
                grad_drive = grad.new_empty(steps, batch, n, d_a)
        grad_bias = grad.new_empty(n, d_a) if ctx.needs_input_grad[1] else None
        strides = grad_drive.stride()[:2] if grad_drive is not None else (0, 0)
        _typed("elm_bank_pre_grad", grad.dtype)(
            steps, batch, n, d_a, *strides, _ptr(grad),
            None if grad_drive is None else grad_drive.data_ptr(), _ptr(grad_bias),
        )  # fmt: skip
        return grad_drive, grad_bias


class _FeedforwardMatrix(torch.autograd.Function):
    """A bank's composed input matrix from its synapse weights (see `feedforward_matrix`)."""

    @staticmethod
    def forward(ctx, w_s, w_first, bias, indices, channels, n_channels, d_tree, scale):
        w_s, w_first = w_s.contiguous(), w_first.contiguous()
        bias = None if bias is None else bias.contiguous()
        n, d_a = w_first.shape[0], w_first.shape[-1]
        sizes = (n_channels, n, d_a, d_tree, w_first.shape[1])
        matrix = w_first.new_empty(n_channels * n, d_a)
        indices = (channels, *indices)  # start, slot, row, target after the channels
        _typed("elm_ff_matrix", w_first.dtype)(
            *sizes, *map(_ptr, indices), _ptr(w_s), _ptr(w_first), scale, _ptr(bias),
            _ptr(matrix),
        )  # fmt: skip
        ctx.save_for_backward(w_s, w_first, *indices)
        ctx.sizes, ctx.scale = sizes, scale
        return matrix

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        w_s, w_first, *indices = ctx.saved_tensors
        grad = grad.contiguous()
        grad_w_s = torch.empty_like(w_s) if ctx.needs_input_grad[0] else None
        grad_w_first = torch.empty_like(w_first) if ctx.needs_input_grad[1] else None
        grad_bias = None
        if ctx.needs_input_grad[2]:
            grad_bias = w_first.new_empty(w_first.shape[0], w_first.shape[-1])
        _typed("elm_ff_matrix_grad", w_first.dtype)(
            *ctx.sizes, w_s.numel(), w_first.numel(), *map(_ptr, indices), _ptr(w_s),
            _ptr(w_first), ctx.scale, _ptr(grad), _ptr(grad_w_s), _ptr(grad_w_first),
            _ptr(grad_bias),
        )  # fmt: skip
        return grad_w_s, grad_w_first, grad_bias, None, None, None, None, None


def feedforward_matrix(
    w_s: torch.Tensor,
    w_first: torch.Tensor,
    indices: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    d_tree: int,
    scale: float,
    bias: torch.Tensor | None = None,
    channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The composed input matrix of `elmnet.network.ELMBank.feedforward_matrix` in one C++
    pass each way (differentiable in w_s, w_first and bias), its rows for the listed input
    channels only: (len(channels) · N, d_a), channel u's neuron k at row u · N + k; every
    channel when `channels` is None. indices = (start, slot, row, target), int64: the
    feed-forward slots sorted by target (channel · N + neuron), start (d_src + 1,) the
    first slot of each channel; slot k adds (scale · w_s.flatten()[slot[k]]) ·
    w_first[row[k] // d_tree, row[k] % d_tree] to its row, which starts from bias[neuron]
    when a bias (N, d_a) is given (a token table's), else from zero. w_s (N, k_c), w_first
    (N, fan_in, d_a) and bias float32/float64 CPU tensors of one dtype; channels int64 in
    [0, d_src)."""
    start = indices[0]
    if channels is None:
        n_channels = start.numel() - 1
    else:
        channels = channels.to(torch.int64).contiguous()
        n_channels = channels.numel()
    return _FeedforwardMatrix.apply(
        w_s, w_first, bias, tuple(t.contiguous() for t in indices), channels, n_channels,
        d_tree, scale,
    )  # fmt: skip


class _RecurrentValues(torch.autograd.Function):
    """A bank's recurrent synapse values from its synapse weights (`recurrent_values`)."""

    @staticmethod
    def forward(ctx, w_s, slot, entry, nnz, scale):
        w_s = w_s.contiguous()
        values = w_s.new_empty(nnz)
        _typed("elm_recurrent_values", w_s.dtype)(
            slot.numel(), nnz, _ptr(slot), _ptr(entry), _ptr(w_s), scale, _ptr(values)
        )
        ctx.save_for_backward(slot, entry)
        ctx.shape, ctx.scale = w_s.shape, scale
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        slot, entry = ctx.saved_tensors
        grad = grad.contiguous()
        grad_w_s = grad.new_empty(ctx.shape)
        _typed("elm_recurrent_values_grad", grad.dtype)(
            slot.numel(), grad_w_s.numel(), _ptr(slot), _ptr(entry), _ptr(grad), ctx.scale,
            _ptr(grad_w_s),
        )  # fmt: skip
        return grad_w_s, None, None, None, None


def recurrent_values(
    w_s: torch.Tensor, slot: torch.Tensor, entry: torch.Tensor, nnz: int, scale: float
) -> torch.Tensor:
    """The (nnz,) entries of a bank's recurrent synapse matrix in one C++ pass each way
    (differentiable in w_s): entry[k] sums scale · w_s.flatten()[slot[k]] over the
    recurrent slots k, in slot order, as `elmnet.network.ELMBank._recurrent_values`'s
    index_add does. w_s (N, k_c) float32/float64 on the CPU; slot, entry int64."""
    return _RecurrentValues.apply(w_s, slot.contiguous(), entry.contiguous(), nnz, scale)


def bank_pre(drive: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """drive (T, B, N, d_a) with its B and N axes swapped, plus bias (N, d_a) of drive's
    dtype, as one C++ pass (forward and backward): (T, N, B, d_a) contiguous, the layout
    the bank's time loop reads. The drive is read in place when time-major or the
    time-major view of a contiguous (B, T, N, d_a) (its gradient then laid out so too);
    else copied first. float32/float64 CPU tensors."""
    return _BankPre.apply(drive, bias)


def token_grad(grad: torch.Tensor, tokens: torch.Tensor, table_rows: int) -> torch.Tensor:
    """∂L/∂table (table_rows, d_a) of a token table the bank loops read in place
    (`elmnet.recurrence.TokenRows`), from ∂L/∂pre (T, N, B, d_a) and the (T, B) tokens."""
    steps, n, batch, d_a = grad.shape
    grad, tokens = grad.contiguous(), tokens.to(torch.int64).contiguous()
    out = grad.new_empty(table_rows, d_a)
    _typed("elm_token_grad", grad.dtype)(
        steps, n, batch, d_a, table_rows, _ptr(tokens), _ptr(grad), _ptr(out)
    )
    return out


def spike_product(x: torch.Tensor, m: torch.Tensor, max_density: float) -> torch.Tensor:
    """x (R, n_in) @ m (n_in, n_out) summed over x's nonzeros only, in C++: exact (the
    zeros add nothing) and differentiable in m and in a float x. x has m's dtype
    (float32/float64) or is int8 or bool (spike counts; 1 byte per entry to read). When
    more than `max_density` of x's entries are nonzero it stops early and takes the dense
    product instead. Returns (R, n_out) in m's dtype."""
    return _SpikeProduct.apply(x, m, max_density)
