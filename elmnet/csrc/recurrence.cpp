// The time loops of the ELM memory recurrence on the CPU, as raw pointer loops.
//
// Also here, as plain C functions with scalar arguments: the leaky trace of
// elmnet.ops.exp_trace (one sequential pass each way) and the product of spike input with
// a weight matrix over the input's nonzeros (elmnet.ops.spike_matmul), the two parts of
// an ELM neuron outside the recurrence that the eager path does with whole-tensor ops.
//
// The equations, names and tensor layouts are those of the module docstring of
// elmnet/recurrence.py; elmnet/cpp_loop.py prepares the arguments (every tensor
// contiguous, per-step coefficients broadcast to (N, B, width), weights pre-transposed for
// the backward pass) and allocates the outputs, which these functions fill in place.
// The interface is plain C (one struct of sizes and pointers, called through ctypes): no
// torch header is included, so the first-use build takes seconds, not minutes.
//
// Why a compiled loop: the eager loop issues about a dozen ATen ops per step, each costing
// a few µs of dispatch while doing ~10³ FLOPs at small batch. Here one call runs all
// steps; the per-step products are small (B × d_m times d_m × d_a) and written as
// register-tiled loops over contiguous output rows (`add_mat_mat`), which g++ -O3
// vectorises without reassociating a floating-point sum (each output element is summed
// in input order), so float64 results stay within rounding of the eager path.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

extern "C" {

struct ElmGrads;

// Everything one call needs; pointers a call does not use are null. Layout mirrored by
// elmnet/cpp_loop.py (_Args): keep the two in step.
// S's gather lists (see `build_lane_layout`), or Sᵀ's rows as they are (ElmArgs::lanes_t:
// `first` (N + 1,), no masks, built by elmnet/cpp_loop.py's `lane_layout`, which mirrors
// this struct as _LaneLayout).
struct LaneLayout {
  int64_t size;           // entries in all lists
  const int64_t* first;   // (groups · width + 1,) where each list starts
  const int32_t* index;   // (size,)
  const uint32_t* masks;  // (size / L · kMaskWords,)
  const int32_t* pos;     // (nnz,) where each entry of S sits in the lists
};

struct ElmArgs {
  int64_t n_steps, n, batch, d_m, n_layers, act, d_tree;
  int64_t feedback;  // 1: a bank with the recurrent part (the fields after `carry`)
  double kappa_r;
  const int64_t* widths;  // (n_layers + 1,): a⁰'s width d_a, then each layer's output
  // shared
  const void* kappa;  // (N, B, d_m)
  const void* gain;   // (N, B, d_m)
  // U and the layers' weights: as the forward reads them, U (N, d_m, d_a) and (N, in, out)
  // per layer; the reverse-time loops read their transposes, Uᵀ (N, d_a, d_m) and (N, out,
  // in), except the lanes loop (`backward_on_lanes`), which reads them as the forward does.
  const void* u;
  const void* const* weights;
  void* const* acts;           // (T, N, B, width) pre-activations a⁰ … (null: not kept)
  // forward
  const void* pre;       // (T, N, B, d_a)
  const void* memory;    // (N, B, d_m) m_{−1}
  const void* const* biases;  // (N, B, out) per layer
  void* memories;        // (T, N, B, d_m)
  void* mlp_out;         // (T, N, B, d_m) z_t (backward: read, for tanh z_t)
  // backward
  const void* grad_memories;  // (T, N, B, d_m) or null
  const void* grad_mlp_out;   // (T, N, B, d_m) or null
  void* grad_z;               // (T, N, B, d_m)
  void* const* grad_acts;     // like acts
  // Σ_t ∂L/∂m_t ⊙ m_{t−1} and Σ_t ∂L/∂m_t ⊙ tanh z_t per state (N, B, d_m), zero on entry,
  // summed over the steps by the reverse-time loops, where ∂L/∂m_t and tanh z_t are at hand
  // (the caller reduces them to κ's and g's shape): summed afterwards, ∂L/∂m_t was a
  // (T, N, B, d_m) tensor to write and read back.
  void* grad_kappa;
  void* grad_gain;
  void* carry;                // (N, B, d_m), zero on entry; ∂L/∂m_{−1} on return
  // feedback (an empty S has null `values`)
  const void* values;    // (nnz,) entries of S
  const int32_t* crow;   // (N·d_tree + 1,) CSR rows of S
  const int32_t* col;    // (nnz,)
  const void* w_branch;  // (N, d_tree, d_a); as u: transposed for the batch-inner backward
  const void* w_y;       // (N, d_m)
  const void* beta;      // (N,)
  const void* drop;      // (T, N, B) or null
  const void* highpass0;  // (N, B) r̄_{−1}
  const void* output0;    // (N, B) o_{−1}
  void* outputs;          // (T, N, B) o_t (backward: read)
  void* highpasses;       // (T, N, B) r̄_t
  const void* grad_outputs;     // (T, N, B) or null
  const void* grad_highpasses;  // (T, N, B) or null
  void* grad_y;            // (T, N, B)
  void* grad_r;            // (T, N, B)
  void* grad_branches;     // (T, N, d_tree, B): the lanes loop's (`bank_backward` keeps a
                           // neuron's step)
  void* carry_out;         // (N, B), zero on entry; ∂L/∂o_{−1} on return
  void* carry_highpass;    // (N, B), zero on entry; ∂L/∂r̄_{−1} on return
  // Token input (the bank loops' forward): null, or (T, B) token ids, and then `pre` is
  // the table (tokens · N, d_a) whose row token · N + k is neuron k's pre-activation for
  // that token, read in place of a (T, N, B, d_a) copy of its rows.
  const int64_t* tokens;
  // Where the bank's batch-inner reverse-time loop (`bank_backward`, which needs it) sums
  // the weight gradients, step by step; the per-step gradients they come from live for one
  // step there (null grad_z and grad_acts, but ∂L/∂a⁰ where ∂L/∂pre is wanted), and no
  // `elm_weight_grads_*` call follows. The other loops ignore it.
  const ElmGrads* grads;
  // The lanes loops' layouts of S, kept by the caller between calls (elmnet/cpp_loop.py's
  // `lane_layout`): S's gather lists (`build_lane_layout`, the forward's) and Sᵀ's rows
  // (one per source, each entry's index its branch in the (groups, d_tree, L) lane layout:
  // the forward's pushes and the reverse-time loop's sums). Needed by the lanes loops with
  // feedback; the other loops ignore them.
  const LaneLayout* lanes;
  const LaneLayout* lanes_t;
  // Null, or where the bank's forward loop leaves its weights in lane layout
  // (`lay_out_weights`; `elm_lane_weights_*` says how many values) for the reverse-time
  // lanes loop, which then reads them from there instead of laying them out again.
  void* lane_weights;
};

// Where `elm_weight_grads_*` or `bank_backward` (ElmArgs::grads) write the weight
// gradients; mirrored by elmnet/cpp_loop.py (_Grads). Per-state gradients are summed over
// steps only (the caller reduces them to the coefficient's shape); those of κ and g are
// ElmArgs' (the reverse-time loops').
struct ElmGrads {
  void* grad_u;               // (N, d_m, d_a)
  void* const* grad_weights;  // (N, in, out) per layer
  void* const* grad_biases;   // (N, B, out) per layer
  void* grad_values;          // (nnz,)   feedback only, as the three below
  void* grad_w_branch;        // (N, d_tree, d_a)
  void* grad_w_y;             // (N, d_m)
  void* grad_beta;            // (N, B)
  // With ElmArgs::tokens, for `bank_backward`: null, or the token table's gradient
  // (rows · N, d_a), zero on entry, summed from ∂L/∂pre step by step (as `token_grad` sums
  // it from the stored ∂L/∂pre after the other loops).
  void* grad_table;
};
}

namespace {

enum Activation : int64_t { kIdentity = 0, kRelu = 1, kRelu2 = 2, kSilu = 3 };

template <typename T>
inline T sigma(T a, int64_t act) {
  switch (act) {
    case kRelu: return a > T(0) ? a : T(0);
    case kRelu2: return a > T(0) ? a * a : T(0);
    case kSilu: return a / (T(1) + std::exp(-a));
    default: return a;
  }
}

// dσ/da at the stored pre-activation (the backward pass keeps no σ(a)).
template <typename T>
inline T sigma_slope(T a, int64_t act) {
  switch (act) {
    case kRelu: return a > T(0) ? T(1) : T(0);
    case kRelu2: return a > T(0) ? T(2) * a : T(0);
    case kSilu: {
      T s = T(1) / (T(1) + std::exp(-a));
      return s * (T(1) + a * (T(1) - s));
    }
    default: return T(1);
  }
}

// The per-step products are (B × I) · (I × J) with I, J ≤ a few dozen: too small for a
// BLAS call to pay off, too large to leave to a naive loop. `tile` keeps an S × W block of
// the output in registers (S samples × W columns, W a power of two so that the inner
// loops are fixed-length and vectorise without remainder code) and streams one row of the
// weight per i, each weight load shared by S samples.
template <typename T, int S, int W>
inline void tile(T* __restrict y, const T* __restrict x, const T* __restrict w, int64_t n_in,
                 int64_t n_out) {
  // GCC vector type of W lanes: the compiler left plain fixed-size arrays mostly scalar.
  typedef T V __attribute__((vector_size(sizeof(T) * W)));
  // The unroll pragmas over the accumulators (here, in `panel_tile` and `outer_tile`):
  // without them GCC kept the accumulator array in memory and stored every accumulator
  // back at each step of the loop over the inputs (in `outer_tile`, 24 stores to 24
  // multiply-adds; Enwik8's training step at batch 1 ran 3 % slower for it).
  V acc[S];
#pragma GCC unroll 8
  for (int r = 0; r < S; ++r) std::memcpy(&acc[r], y + r * n_out, sizeof(V));
  for (int64_t i = 0; i < n_in; ++i) {
    V wr;
    std::memcpy(&wr, w + i * n_out, sizeof(V));
#pragma GCC unroll 8
    for (int r = 0; r < S; ++r) acc[r] += wr * x[r * n_in + i];
  }
#pragma GCC unroll 8
  for (int r = 0; r < S; ++r) std::memcpy(y + r * n_out, &acc[r], sizeof(V));
}

// Columns j… of S rows: tiles of width W while they fit, the rest in narrower ones.
template <typename T, int S, int W>
inline void columns(T* y, const T* x, const T* w, int64_t n_in, int64_t n_out, int64_t j) {
  for (; j + W <= n_out; j += W) tile<T, S, W>(y + j, x, w + j, n_in, n_out);
  if constexpr (W > 1) columns<T, S, W / 2>(y, x, w, n_in, n_out, j);
}

// Y += X M for row-major Y (rows × n_out), X (rows × n_in), M (n_in × n_out).
template <typename T>
void add_mat_mat(T* y, const T* x, const T* m, int64_t rows, int64_t n_in, int64_t n_out) {
  constexpr int kLanes = 64 / sizeof(T);  // one 512-bit vector
  // Eight rows a tile: eight independent multiply-add chains, as many as two FMA units
  // with four cycles' latency keep busy; four rows left them waiting (Enwik8's forward at
  // batch 64 took 0.80-0.87 CPU-s against 0.76-0.84 with eight, interleaved runs).
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8)
    columns<T, 8, kLanes>(y + r * n_out, x + r * n_in, m, n_in, n_out, 0);
  for (; r + 4 <= rows; r += 4)
    columns<T, 4, kLanes>(y + r * n_out, x + r * n_in, m, n_in, n_out, 0);
  for (; r < rows; ++r) columns<T, 1, kLanes>(y + r * n_out, x + r * n_in, m, n_in, n_out, 0);
}

template <typename T>
inline void copy(T* __restrict y, const T* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = x[j];
}

template <typename T>
inline const T* in(const void* p) {
  return static_cast<const T*>(p);
}

template <typename T>
inline T* out(void* p) {
  return static_cast<T*>(p);
}

// ---- The recurrence without feedback (a neuron, or a bank without recurrent synapses) ----
//
// The per-step products here are (B × I) · (I × J) with J the next layer's width (d_a 40,
// d_m 20 for NeuronIO). Each output row is padded to whole 64-byte vectors inside the call
// (J 40 → 48, 20 → 32 in float32; the weights copied once into zero-padded panels), so the
// register tiles below run without remainder code: a tile keeps kRows samples × P vectors
// of the output in registers, and per input i loads P weight vectors, broadcasts kRows
// inputs and issues kRows · P fused multiply-adds. Each output element is still summed in
// input order, so float64 stays within rounding of the eager path.

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
constexpr int64_t kVecLanes = 64 / sizeof(T);

// The first `count` (≤ one vector) values from p, zeros after, without reading past them.
template <typename T>
inline Vec<T> load_head(const T* p, int64_t count) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    return (Vec<T>)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1), p);
  else
    return (Vec<T>)_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << count) - 1), p);
#else
  Vec<T> v{};
  std::memcpy(&v, p, count * sizeof(T));
  return v;
#endif
}

// p[l] = v[l] for lanes l < count (a masked store: a memcpy of a variable length went
// through the stack byte-wise).
template <typename T>
inline void store_head(T* p, Vec<T> v, int64_t count) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    _mm512_mask_storeu_ps(p, __mmask16((1u << count) - 1), __builtin_bit_cast(__m512, v));
  else
    _mm512_mask_storeu_pd(p, __mmask8((1u << count) - 1), __builtin_bit_cast(__m512d, v));
#else
  for (int64_t l = 0; l < count; ++l) p[l] = v[l];
#endif
}

// The sum of v's lanes, as a tree (the in-order sum is a chain of L dependent adds): halves
// added pairwise, 16 → 8 → 4 → 2 → 1 lanes. AVX-512's reduction does exactly that in
// registers; the portable form went through memory, one store and reload per level, and
// was a sixth of Enwik8's weight gradients at batch 64.
template <typename T>
inline T lane_sum(Vec<T> v) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    return _mm512_reduce_add_ps(__builtin_bit_cast(__m512, v));
  else
    return _mm512_reduce_add_pd(__builtin_bit_cast(__m512d, v));
#else
  constexpr int64_t L = kVecLanes<T>;
  T part[L];
  std::memcpy(part, &v, sizeof(v));
  for (int64_t w = L / 2; w >= 1; w /= 2)
    for (int64_t i = 0; i < w; ++i) part[i] += part[i + w];
  return part[0];
#endif
}

// dst[j · ld_dst + i] = src[i · ld_src + j] for i < rows, j < cols: the switch between
// sample-major rows (B, width) and the batch-inner columns the vector loops run on. With
// AVX-512 a vector × vector block at a time in registers (`transpose_block`), not a load
// and a store per element; what these switches still cost (perf) is mostly the wait for
// rows read from memory for the first time in the step.
#if defined(__AVX512F__)
template <int kImm>
inline __m512 shuffle_lanes(__m512 a, __m512 b) {
  return _mm512_shuffle_f32x4(a, b, kImm);
}
template <int kImm>
inline __m512d shuffle_lanes(__m512d a, __m512d b) {
  return _mm512_shuffle_f64x2(a, b, kImm);
}

// The last round, a 4 × 4 transpose of 128-bit lanes: lane g of o[L] = lane L of a[g].
template <typename R>
inline void transpose_lanes(const R a[4], R* o0, R* o1, R* o2, R* o3) {
  const R v0 = shuffle_lanes<0x44>(a[0], a[1]), v1 = shuffle_lanes<0xEE>(a[0], a[1]);
  const R v2 = shuffle_lanes<0x44>(a[2], a[3]), v3 = shuffle_lanes<0xEE>(a[2], a[3]);
  *o0 = shuffle_lanes<0x88>(v0, v2);
  *o1 = shuffle_lanes<0xDD>(v0, v2);
  *o2 = shuffle_lanes<0x88>(v1, v3);
  *o3 = shuffle_lanes<0xDD>(v1, v3);
}

// Rows v[i] of a block to its columns, in place: rounds of shuffles pairing 32-bit (float
// only), 64-bit, then 128-bit lanes.
inline void transpose_block(Vec<float> v[16]) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = __builtin_bit_cast(__m512, v[i]);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m512 u[4][4];  // u[c][g], 128-bit lane L: rows 4g … 4g+3 of column 4L + c
  for (int g = 0; g < 4; ++g)
    for (int h = 0; h < 2; ++h) {
      const __m512d a = _mm512_castps_pd(t[4 * g + h]), b = _mm512_castps_pd(t[4 * g + h + 2]);
      u[2 * h][g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      u[2 * h + 1][g] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  for (int c = 0; c < 4; ++c) transpose_lanes(u[c], &r[c], &r[4 + c], &r[8 + c], &r[12 + c]);
  for (int i = 0; i < 16; ++i) v[i] = __builtin_bit_cast(Vec<float>, r[i]);
}

inline void transpose_block(Vec<double> v[8]) {
  __m512d r[8], t[2][4];  // t[c][g], 128-bit lane L: rows 2g, 2g+1 of column 2L + c
  for (int i = 0; i < 8; ++i) r[i] = __builtin_bit_cast(__m512d, v[i]);
  for (int g = 0; g < 4; ++g) {
    t[0][g] = _mm512_unpacklo_pd(r[2 * g], r[2 * g + 1]);
    t[1][g] = _mm512_unpackhi_pd(r[2 * g], r[2 * g + 1]);
  }
  for (int c = 0; c < 2; ++c) transpose_lanes(t[c], &r[c], &r[2 + c], &r[4 + c], &r[6 + c]);
  for (int i = 0; i < 8; ++i) v[i] = __builtin_bit_cast(Vec<double>, r[i]);
}
#endif

template <typename T>
void transpose(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows,
               int64_t cols) {
#if defined(__AVX512F__)
  constexpr int64_t L = kVecLanes<T>;
  for (int64_t i0 = 0; i0 < rows; i0 += L)
    for (int64_t j0 = 0; j0 < cols; j0 += L) {
      const int64_t h = std::min(L, rows - i0), w = std::min(L, cols - j0);
      Vec<T> r[L];
      for (int64_t i = 0; i < L; ++i)
        r[i] = i < h ? load_head(src + (i0 + i) * ld_src + j0, w) : Vec<T>{};
      transpose_block(r);
      for (int64_t j = 0; j < w; ++j) store_head(dst + (j0 + j) * ld_dst + i0, r[j], h);
    }
#else
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
#endif
}

// Y[r, :P·lanes] += X[r, :n_in] · M[:n_in, :P·lanes] for S rows; ld_* are row strides.
template <typename T, int S, int P>
inline void panel_tile(T* __restrict y, int64_t ld_y, const T* __restrict x, int64_t ld_x,
                       const T* __restrict m, int64_t ld_m, int64_t n_in) {
  using V = Vec<T>;
  constexpr int64_t L = kVecLanes<T>;
  V acc[S][P];
#pragma GCC unroll 8
  for (int r = 0; r < S; ++r)
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) std::memcpy(&acc[r][p], y + r * ld_y + p * L, sizeof(V));
  for (int64_t i = 0; i < n_in; ++i) {
    V w[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) std::memcpy(&w[p], m + i * ld_m + p * L, sizeof(V));
#pragma GCC unroll 8
    for (int r = 0; r < S; ++r) {
      const T xi = x[r * ld_x + i];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) acc[r][p] += w[p] * xi;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < S; ++r)
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) std::memcpy(y + r * ld_y + p * L, &acc[r][p], sizeof(V));
}

// Columns in blocks of up to 4 vectors (4 rows × 4 vectors: 16 accumulators, half the
// AVX-512 register file), then rows in blocks of 4.
template <typename T, int S>
inline void panel_rows(T* y, int64_t ld_y, const T* x, int64_t ld_x, const T* m, int64_t ld_m,
                       int64_t n_in, int64_t vectors) {
  constexpr int64_t L = kVecLanes<T>;
  for (int64_t p = 0; p < vectors; p += 4) {
    T* yp = y + p * L;
    const T* mp = m + p * L;
    switch (std::min<int64_t>(4, vectors - p)) {
      case 1: panel_tile<T, S, 1>(yp, ld_y, x, ld_x, mp, ld_m, n_in); break;
      case 2: panel_tile<T, S, 2>(yp, ld_y, x, ld_x, mp, ld_m, n_in); break;
      case 3: panel_tile<T, S, 3>(yp, ld_y, x, ld_x, mp, ld_m, n_in); break;
      default: panel_tile<T, S, 4>(yp, ld_y, x, ld_x, mp, ld_m, n_in); break;
    }
  }
}

// Y += X M over `rows` rows; M is a padded panel (n_in × vectors · lanes).
template <typename T>
void panel_product(T* y, int64_t ld_y, const T* x, int64_t ld_x, const T* m, int64_t n_in,
                   int64_t vectors, int64_t rows) {
  const int64_t ld_m = vectors * kVecLanes<T>;
  int64_t r = 0;
  // 8 rows while the tile (8 × ≤ 3 vectors) fits the 32 vector registers with its weights:
  // twice the independent multiply-add chains per weight load.
  if (vectors <= 3)
    for (; r + 8 <= rows; r += 8)
      panel_rows<T, 8>(y + r * ld_y, ld_y, x + r * ld_x, ld_x, m, ld_m, n_in, vectors);
  for (; r + 4 <= rows; r += 4)
    panel_rows<T, 4>(y + r * ld_y, ld_y, x + r * ld_x, ld_x, m, ld_m, n_in, vectors);
  for (; r < rows; ++r)
    panel_rows<T, 1>(y + r * ld_y, ld_y, x + r * ld_x, ld_x, m, ld_m, n_in, vectors);
}

inline int64_t vectors_for(int64_t width, int64_t lanes) { return (width + lanes - 1) / lanes; }

// h = σ(a) over n entries, the activation chosen once per call rather than per entry: a
// switch inside the loop (as in `sigma`) keeps g++ from vectorising it.
template <typename T>
void activate(T* __restrict h, const T* __restrict a, int64_t n, int64_t act) {
  switch (act) {
    case kRelu:
      for (int64_t i = 0; i < n; ++i) h[i] = a[i] > T(0) ? a[i] : T(0);
      break;
    case kRelu2:
      for (int64_t i = 0; i < n; ++i) h[i] = a[i] > T(0) ? a[i] * a[i] : T(0);
      break;
    case kSilu:
      for (int64_t i = 0; i < n; ++i) h[i] = a[i] / (T(1) + std::exp(-a[i]));
      break;
    default:
      for (int64_t i = 0; i < n; ++i) h[i] = a[i];
  }
}

// tanh of 16 float32 lanes without a library call, so that the loop vectorises.
// |x| < 0.625: tanh x = x (1 + s Q(s)), s = x², Q of degree 4 fitted by least squares on
// Chebyshev nodes of [0, 0.625²] (float64 fit: relative error 6e-9 before rounding to
// float32). |x| ≥ 0.625: tanh|x| = (1 − t)/(1 + t), t = e^{−2|x|} ≤ 0.29 (no cancellation),
// e^y = 2^n e^r with n = round(y / ln 2), r = y − n ln 2 in two parts (Cody–Waite: the
// high part has 16 significant bits, so n · ln2_hi is exact for |n| < 2^8) and e^r by its
// Taylor polynomial of degree 7 (|r| ≤ ln2/2: truncation 5e-9). |x| is clamped at 9,
// where tanh rounds to 1 in float32. The sign is copied back bit-wise (tanh(−0) = −0);
// NaN stays NaN. Accuracy against float64 tanh: tests/test_recurrence_cpp.py.
inline Vec<float> tanh_vec(Vec<float> x) {
  using V = Vec<float>;
  typedef int32_t VI __attribute__((vector_size(64)));
  const VI sign = __builtin_bit_cast(VI, x) & int32_t(0x80000000u);
  V a = x < 0.0f ? -x : x;
  a = a > 9.0f ? V{} + 9.0f : a;
  const V s = a * a;
  V q = V{} - 0.0057040425f;
  q = q * s + 0.0206378624f;
  q = q * s - 0.0537391566f;
  q = q * s + 0.133314312f;
  q = q * s - 0.333332807f;
  const V small = a + a * (s * q);
  const V y = -2.0f * a;
  const V magic = V{} + 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer
  const V nf = (y * 1.44269504f + magic) - magic;
  const V r = (y - nf * 0.693145752f) - nf * 1.42860682e-6f;
  V e = V{} + 1.0f / 5040.0f;
  e = e * r + 1.0f / 720.0f;
  e = e * r + 1.0f / 120.0f;
  e = e * r + 1.0f / 24.0f;
  e = e * r + 1.0f / 6.0f;
  e = e * r + 0.5f;
  e = e * r + 1.0f;
  e = e * r + 1.0f;
  const VI n = __builtin_convertvector(nf, VI);
  const VI bits = (n + 127) << 23;
  const V t = e * __builtin_bit_cast(V, bits);
  const V large = (1.0f - t) / (1.0f + t);
  const V mag = a < 0.625f ? small : large;
  return __builtin_bit_cast(V, __builtin_bit_cast(VI, mag) | sign);
}

// y = tanh(x) over n entries: the vector form for float32 (rows padded to whole vectors
// are not needed: a short tail goes through a zero-filled vector), std::tanh for float64.
template <typename T>
void tanh_all(T* y, const T* x, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    using V = Vec<float>;
    constexpr int64_t L = kVecLanes<float>;
    int64_t i = 0;
    for (; i + L <= n; i += L) {
      V v;
      std::memcpy(&v, x + i, sizeof(V));
      v = tanh_vec(v);
      std::memcpy(y + i, &v, sizeof(V));
    }
    if (i < n) {
      V v{};
      std::memcpy(&v, x + i, (n - i) * sizeof(float));
      v = tanh_vec(v);
      std::memcpy(y + i, &v, (n - i) * sizeof(float));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
  }
}

// tanh of one vector, as `tanh_all` computes it.
template <typename T>
inline Vec<T> tanh_lanes(Vec<T> x) {
  if constexpr (std::is_same_v<T, float>) {
    return tanh_vec(x);
  } else {
    for (int64_t l = 0; l < kVecLanes<T>; ++l) x[l] = std::tanh(x[l]);
    return x;
  }
}

template <typename T>
std::vector<T*> lay_out_weights(const ElmArgs& s, T* dst);

template <typename T>
void plain_forward(const ElmArgs& s) {
  // Where given, the weights for a reverse-time lanes loop (ElmArgs::lane_weights), as
  // the lanes forward would have left them.
  if (s.lane_weights) lay_out_weights<T>(s, out<T>(s.lane_weights));
  const int64_t n_steps = s.n_steps, n = s.n, batch = s.batch, d_m = s.d_m;
  const int64_t n_layers = s.n_layers, act = s.act;
  constexpr int64_t L = kVecLanes<T>;
  const bool keep = s.acts != nullptr;
  // Stage l (0 … n_layers) computes width widths[l] from the input m (stage 0) or the
  // previous h; its output rows are padded to `vecs[l]` vectors.
  std::vector<int64_t> vecs(n_layers + 1), ins(n_layers + 1);
  for (int64_t l = 0; l <= n_layers; ++l) {
    vecs[l] = vectors_for(l < n_layers ? s.widths[l] : d_m, L);
    ins[l] = l == 0 ? d_m : s.widths[l - 1];
  }
  // Zero-padded weight panels for every neuron: stage 0 is U, stage l the layer l − 1.
  std::vector<std::vector<T>> panels(n_layers + 1);
  for (int64_t l = 0; l <= n_layers; ++l) {
    const int64_t width = l < n_layers ? s.widths[l] : d_m, ld = vecs[l] * L;
    const T* w = l == 0 ? in<T>(s.u) : in<T>(s.weights[l - 1]);
    const int64_t w_cols = l == 0 ? s.widths[0] : width;
    panels[l].assign(n * ins[l] * ld, T(0));
    for (int64_t k = 0; k < n; ++k)
      for (int64_t i = 0; i < ins[l]; ++i)
        std::memcpy(&panels[l][(k * ins[l] + i) * ld], w + (k * ins[l] + i) * w_cols,
                    w_cols * sizeof(T));
  }
  int64_t widest = 0;
  for (int64_t l = 0; l <= n_layers; ++l) widest = std::max(widest, vecs[l] * L);
  std::vector<T> y_buf(batch * widest), h_buf(batch * widest), th(batch * d_m);

  const T* pre = in<T>(s.pre);
  const T* kappa = in<T>(s.kappa);
  const T* gain = in<T>(s.gain);
  T* memories = out<T>(s.memories);
  T* mlp_out = out<T>(s.mlp_out);
  const int64_t d_a = s.widths[0];

  for (int64_t t = 0; t < n_steps; ++t) {
    for (int64_t k = 0; k < n; ++k) {
      const int64_t rows = (t * n + k) * batch;
      const int64_t states = k * batch;
      const T* m_prev = t == 0 ? in<T>(s.memory) + states * d_m
                               : memories + ((t - 1) * n + k) * batch * d_m;
      const T* x = m_prev;
      int64_t ld_x = d_m;
      for (int64_t l = 0; l <= n_layers; ++l) {
        const bool last = l == n_layers;
        const int64_t width = last ? d_m : s.widths[l], ld = vecs[l] * L;
        // Start from pre_t (stage 0) or the bias; padding columns stay zero.
        const T* start = l == 0 ? pre + rows * d_a : in<T>(s.biases[l - 1]) + states * width;
        T* y = y_buf.data();
        for (int64_t b = 0; b < batch; ++b) {
          std::memcpy(y + b * ld, start + b * width, width * sizeof(T));
          std::fill(y + b * ld + width, y + (b + 1) * ld, T(0));
        }
        panel_product(y, ld, x, ld_x, panels[l].data() + k * ins[l] * ld, ins[l], vecs[l],
                      batch);
        // The pre-activation is kept where the backward pass reads it; z in mlp_out.
        T* kept = last ? mlp_out + rows * d_m
                       : (keep ? out<T>(s.acts[l]) + rows * width : nullptr);
        if (kept)
          for (int64_t b = 0; b < batch; ++b)
            std::memcpy(kept + b * width, y + b * ld, width * sizeof(T));
        if (!last) {
          activate(h_buf.data(), y, batch * ld, act);
          x = h_buf.data();
          ld_x = ld;
        }
      }
      // m_t = κ ⊙ m_{t−1} + g ⊙ tanh(z_t), z_t just written to mlp_out.
      const T* z = mlp_out + rows * d_m;
      tanh_all(th.data(), z, batch * d_m);
      T* m = memories + rows * d_m;
      const T* kap = kappa + states * d_m;
      const T* gn = gain + states * d_m;
      for (int64_t j = 0; j < batch * d_m; ++j) m[j] = kap[j] * m_prev[j] + gn[j] * th[j];
    }
  }
}

// out[r, i] = dh[r, i] · σ'(a[r, i]) for `width` columns of each row (dh padded, ld_dh).
template <typename T>
void times_slope(T* __restrict out, const T* __restrict dh, int64_t ld_dh, const T* __restrict a,
                 int64_t rows, int64_t width, int64_t act) {
  if (ld_dh == width) {  // unpadded: one flat loop, which vectorises however narrow the rows
    width *= rows;
    rows = 1;
  }
  for (int64_t r = 0; r < rows; ++r) {
    T* o = out + r * width;
    const T* d = dh + r * ld_dh;
    const T* x = a + r * width;
    switch (act) {
      case kRelu:
        for (int64_t i = 0; i < width; ++i) o[i] = x[i] > T(0) ? d[i] : T(0);
        break;
      case kRelu2:
        for (int64_t i = 0; i < width; ++i) o[i] = x[i] > T(0) ? d[i] * (T(2) * x[i]) : T(0);
        break;
      case kSilu:
        for (int64_t i = 0; i < width; ++i) o[i] = d[i] * sigma_slope(x[i], act);
        break;
      default:
        for (int64_t i = 0; i < width; ++i) o[i] = d[i];
    }
  }
}

// Zero-padded panels of N matrices (rows × cols each, row-major) with rows of `vecs` vectors.
template <typename T>
std::vector<T> padded_panels(const T* w, int64_t n, int64_t rows, int64_t cols, int64_t vecs) {
  const int64_t ld = vecs * kVecLanes<T>;
  std::vector<T> panel(n * rows * ld, T(0));
  for (int64_t k = 0; k < n; ++k)
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(&panel[(k * rows + i) * ld], w + (k * rows + i) * cols, cols * sizeof(T));
  return panel;
}

// The tensors both reverse-time loops (plain and bank) read and write besides their own.
template <typename T>
struct BackwardIO {
  const T *kappa, *gain, *mlp_out, *grad_memories, *grad_mlp_out;
  T *grad_z, *carry, *grad_kappa, *grad_gain;
};

template <typename T>
BackwardIO<T> backward_io(const ElmArgs& s) {
  return {in<T>(s.kappa),         in<T>(s.gain),         in<T>(s.mlp_out),
          in<T>(s.grad_memories), in<T>(s.grad_mlp_out), out<T>(s.grad_z),
          out<T>(s.carry),        out<T>(s.grad_kappa),  out<T>(s.grad_gain)};
}

// m_{t−1} of neuron k's B states (d_m each, contiguous): m_{−1} or step t − 1's memories.
template <typename T>
inline const T* previous_memory(const ElmArgs& s, int64_t t, int64_t k) {
  return t == 0 ? in<T>(s.memory) + k * s.batch * s.d_m
                : in<T>(s.memories) + ((t - 1) * s.n + k) * s.batch * s.d_m;
}

// κ's and g's per-state sums over the steps from ∂L/∂m_t (g_m) and tanh z_t (p) of one
// neuron's B states at step t: ∂L/∂κ += ∂L/∂m_t ⊙ m_{t−1}, ∂L/∂g += ∂L/∂m_t ⊙ tanh z_t.
template <typename T>
inline void state_grads(const ElmArgs& s, const BackwardIO<T>& io, int64_t t, int64_t k,
                        const T* __restrict g_m, const T* __restrict p) {
  const int64_t first = k * s.batch * s.d_m;
  const T* __restrict m = previous_memory<T>(s, t, k);
  T* __restrict gk = io.grad_kappa + first;
  T* __restrict gg = io.grad_gain + first;
  for (int64_t j = 0; j < s.batch * s.d_m; ++j) {
    gk[j] += g_m[j] * m[j];
    gg[j] += g_m[j] * p[j];
  }
}

// The recurrent part's tensors the batch-inner reverse-time loop fills and the weight
// gradients then read (q_t from outputs and drop; ∂L/∂y, ∂L/∂r, ∂L/∂c per step).
template <typename T>
struct FeedbackIO {
  const T *values, *drop, *outputs;
  T *grad_y, *grad_r, *grad_branches;
};

template <typename T>
FeedbackIO<T> feedback_io(const ElmArgs& s) {
  return {in<T>(s.values),  in<T>(s.drop),  in<T>(s.outputs),
          out<T>(s.grad_y), out<T>(s.grad_r), out<T>(s.grad_branches)};
}

// The reverse-time loop of `plain_forward`, with the same padded register-tiled products
// (the weights arrive transposed: layer l as (N, out, in), U as Uᵀ (N, d_a, d_m)).
template <typename T>
void plain_backward(const ElmArgs& s) {
  const int64_t n_steps = s.n_steps, n = s.n, batch = s.batch, d_m = s.d_m;
  const int64_t n_layers = s.n_layers, act = s.act, d_a = s.widths[0];
  constexpr int64_t L = kVecLanes<T>;
  std::vector<std::vector<T>> panels(n_layers);
  std::vector<int64_t> vecs(n_layers);
  int64_t widest = 0;
  for (int64_t l = 0; l < n_layers; ++l) {
    vecs[l] = vectors_for(s.widths[l], L);
    widest = std::max(widest, vecs[l] * L);
    panels[l] = padded_panels(in<T>(s.weights[l]), n, s.widths[l + 1], s.widths[l], vecs[l]);
  }
  const int64_t vm = vectors_for(d_m, L), ldm = vm * L;
  const std::vector<T> u_panel = padded_panels(in<T>(s.u), n, d_a, d_m, vm);
  std::vector<T> dh(batch * widest), carry_pad(batch * ldm), p(batch * d_m), g(batch * d_m);

  const auto io = backward_io<T>(s);
  const auto [kappa, gain, mlp_out, grad_memories, grad_mlp_out, grad_z, carry, gk, gg] = io;

  for (int64_t t = n_steps - 1; t >= 0; --t) {
    for (int64_t k = 0; k < n; ++k) {
      const int64_t rows = (t * n + k) * batch, states = k * batch;
      T* cr = carry + states * d_m;
      const T* gm = grad_memories ? grad_memories + rows * d_m : nullptr;
      for (int64_t j = 0; j < batch * d_m; ++j) g[j] = gm ? gm[j] + cr[j] : cr[j];
      // ∂L/∂z_t = ∂L/∂m_t ⊙ g (1 − tanh² z_t) [+ ∂L/∂z_t from outside]; tanh z_t
      // recomputed as the forward computed it (kept, it was a (T, N, B, d_m) tensor more).
      T* dz = grad_z + rows * d_m;
      tanh_all(p.data(), mlp_out + rows * d_m, batch * d_m);
      state_grads(s, io, t, k, g.data(), p.data());
      const T* gn = gain + states * d_m;
      const T* go = grad_mlp_out ? grad_mlp_out + rows * d_m : nullptr;
      for (int64_t j = 0; j < batch * d_m; ++j) {
        const T v = g[j] * (gn[j] * (T(1) - p[j] * p[j]));
        dz[j] = go ? v + go[j] : v;
      }
      const T* da = dz;
      int64_t ld_da = d_m;
      for (int64_t l = n_layers - 1; l >= 0; --l) {
        const int64_t w_in = s.widths[l], w_out = s.widths[l + 1], ld = vecs[l] * L;
        std::fill(dh.begin(), dh.begin() + batch * ld, T(0));
        panel_product(dh.data(), ld, da, ld_da, panels[l].data() + k * w_out * ld, w_out,
                      vecs[l], batch);
        T* da_in = out<T>(s.grad_acts[l]) + rows * w_in;
        times_slope(da_in, dh.data(), ld, in<T>(s.acts[l]) + rows * w_in, batch, w_in, act);
        da = da_in;
        ld_da = w_in;
      }
      // ∂L/∂m_{t−1} = ∂L/∂m_t ⊙ κ + ∂L/∂a⁰ Uᵀ
      const T* kap = kappa + states * d_m;
      for (int64_t b = 0; b < batch; ++b) {
        T* c = carry_pad.data() + b * ldm;
        for (int64_t j = 0; j < d_m; ++j) c[j] = g[b * d_m + j] * kap[b * d_m + j];
        std::fill(c + d_m, c + ldm, T(0));
      }
      panel_product(carry_pad.data(), ldm, da, ld_da, u_panel.data() + k * d_a * ldm, d_a, vm,
                    batch);
      for (int64_t b = 0; b < batch; ++b)
        std::memcpy(cr + b * d_m, carry_pad.data() + b * ldm, d_m * sizeof(T));
    }
  }
}

// Yᵀ += Mᵀ Xᵀ in batch-inner layout: Yᵀ (n_out × bp), Xᵀ (n_in × bp), M (n_in × n_out)
// row-major, bp a whole number of 64-byte vectors. Each output element is a vector of
// samples, so every multiply-add is a full-width FMA whatever n_in and n_out are (the
// row layout of `add_mat_mat` leaves lanes idle when n_out = 10 or 5): J outputs of one
// vector of samples stay in registers while the inputs stream past, each x vector loaded
// once for J FMAs. Sums run in input order, as `add_mat_mat`'s do.
template <typename T, int J>
inline void tile_t(T* __restrict y, const T* __restrict x, const T* __restrict m,
                   int64_t n_in, int64_t n_out, int64_t bp) {
  typedef T V __attribute__((vector_size(64)));
  V acc[J];
  for (int r = 0; r < J; ++r) std::memcpy(&acc[r], y + r * bp, sizeof(V));
  for (int64_t i = 0; i < n_in; ++i) {
    V xv;
    std::memcpy(&xv, x + i * bp, sizeof(V));
    const T* mi = m + i * n_out;
    for (int r = 0; r < J; ++r) acc[r] += xv * mi[r];
  }
  for (int r = 0; r < J; ++r) std::memcpy(y + r * bp, &acc[r], sizeof(V));
}

template <typename T, int J>
inline void outputs_t(T* y, const T* x, const T* m, int64_t n_in, int64_t n_out, int64_t bp,
                      int64_t j) {
  for (; j + J <= n_out; j += J) tile_t<T, J>(y + j * bp, x, m + j, n_in, n_out, bp);
  if constexpr (J > 1) outputs_t<T, J / 2>(y, x, m, n_in, n_out, bp, j);
}

template <typename T>
void add_mat_mat_t(T* y, const T* x, const T* m, int64_t n_in, int64_t n_out, int64_t bp) {
  constexpr int64_t kLanes = 64 / sizeof(T);
  for (int64_t b = 0; b < bp; b += kLanes) outputs_t<T, 8>(y + b, x + b, m, n_in, n_out, bp, 0);
}

// Rows r… of C = S Q (CSR S: crow, col, values; Q and C batch-inner, rows of bp samples),
// P vectors of samples at a time, each row's sum held in registers over its entries (a
// sum in memory waited on a store per entry: a quarter of the Enwik8 step at batch 64).
// Each element is summed over the row's entries in order, as before.
template <typename T, int P>
inline void branch_sums_inner_p(T* c, const T* q, const T* values, const int32_t* crow,
                                const int32_t* col, int64_t rows, int64_t bp, int64_t b) {
  using V = Vec<T>;
  constexpr int64_t L = kVecLanes<T>;
  for (int64_t r = 0; r < rows; ++r) {
    V acc[P] = {};
    for (int32_t e = crow[r]; e < crow[r + 1]; ++e) {
      const V v = V{} + values[e];
      const T* qs = q + static_cast<int64_t>(col[e]) * bp + b;
      for (int p = 0; p < P; ++p) {
        V x;
        std::memcpy(&x, qs + p * L, sizeof(V));
        acc[p] += v * x;
      }
    }
    for (int p = 0; p < P; ++p) std::memcpy(c + r * bp + b + p * L, &acc[p], sizeof(V));
  }
}

template <typename T>
void branch_sums_inner(T* c, const T* q, const T* values, const int32_t* crow,
                       const int32_t* col, int64_t rows, int64_t bp) {
  constexpr int64_t L = kVecLanes<T>;
  for (int64_t b = 0; b < bp; b += 4 * L) {
    switch (std::min<int64_t>(4, (bp - b) / L)) {
      case 1: branch_sums_inner_p<T, 1>(c, q, values, crow, col, rows, bp, b); break;
      case 2: branch_sums_inner_p<T, 2>(c, q, values, crow, col, rows, bp, b); break;
      case 3: branch_sums_inner_p<T, 3>(c, q, values, crow, col, rows, bp, b); break;
      default: branch_sums_inner_p<T, 4>(c, q, values, crow, col, rows, bp, b); break;
    }
  }
}

// q_t = D_t ⊙ o_{t−1}: what the recurrent synapses read at step t, (N, B) with rows `ld`
// apart (the batch-inner loops pad them to whole vectors of samples).
template <typename T>
void step_reads(const ElmArgs& s, int64_t t, T* q, int64_t ld) {
  const int64_t batch = s.batch, nb = s.n * batch;
  const T* o = t == 0 ? in<T>(s.output0) : in<T>(s.outputs) + (t - 1) * nb;
  const T* drop = in<T>(s.drop);
  for (int64_t k = 0; k < s.n; ++k)
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t i = k * batch + b;
      q[k * ld + b] = drop ? drop[t * nb + i] * o[i] : o[i];
    }
}

// The forward loop with feedback (the ELM Network's recurrent layer: many small neurons,
// d_m ≈ 5, and the recurrent synapses), tuned for those shapes apart from `plain_forward`;
// float32 proposals through the same `tanh_vec` (`tanh_all`).
template <typename T>
void bank_forward(const ElmArgs& s) {
  if (s.lane_weights) lay_out_weights<T>(s, out<T>(s.lane_weights));  // as `plain_forward`
  const int64_t n_steps = s.n_steps, n = s.n, batch = s.batch, d_m = s.d_m;
  const int64_t n_layers = s.n_layers, act = s.act, d_tree = s.d_tree;
  const int64_t d_a = s.widths[0], nb = n * batch;
  const bool keep = s.acts != nullptr;
  const int64_t widest = *std::max_element(s.widths, s.widths + n_layers + 1);
  std::vector<T> a_buf(batch * widest), h_buf(batch * widest), th(batch * d_m);

  const T* pre = in<T>(s.pre);
  const T* u = in<T>(s.u);
  const T* kappa = in<T>(s.kappa);
  const T* gain = in<T>(s.gain);
  T* memories = out<T>(s.memories);
  T* mlp_out = out<T>(s.mlp_out);

  const bool fb = s.feedback != 0;
  const T* values = in<T>(s.values);
  T* outputs = out<T>(s.outputs);
  T* highpasses = out<T>(s.highpasses);
  const T leak_r = T(1.0 - s.kappa_r);
  // Batch-inner buffers, each row padded to bp samples (zeros past the batch): the
  // recurrent sums and the first layer's products run on whole vectors of samples.
  const int64_t lanes = 64 / sizeof(T), bp = (batch + lanes - 1) / lanes * lanes;
  std::vector<T> q(fb ? n * bp : 0, T(0)), c(fb ? n * d_tree * bp : 0, T(0));
  std::vector<T> a_t(d_a * bp), m_t(d_m * bp, T(0));

  for (int64_t t = 0; t < n_steps; ++t) {
    if (fb) {
      // q_t = D_t ⊙ o_{t−1}, then the branch sums c_t = S q_t as (N·d_tree, B): every
      // neuron's step needs all of them, so they come first.
      step_reads(s, t, q.data(), bp);
      branch_sums_inner(c.data(), q.data(), values, s.crow, s.col, n * d_tree, bp);
    }
    // One neuron's whole batch at a time: its rows (t, k, 0…B−1) are contiguous in every
    // (T, N, B, ·) and (N, B, ·) tensor, so each stage is a (B × width) matrix.
    for (int64_t k = 0; k < n; ++k) {
      const int64_t rows = (t * n + k) * batch;  // first row of (t, k) in (T, N, B, ·)
      const int64_t states = k * batch;          // first row of k in (N, B, ·)
      const T* m_prev = t == 0 ? in<T>(s.memory) + states * d_m
                               : memories + ((t - 1) * n + k) * batch * d_m;
      // a⁰ = pre_t + m_{t−1} U [+ c_t W_b], written where it is kept.
      T* a = n_layers == 0 ? mlp_out + rows * d_m
                           : (keep ? out<T>(s.acts[0]) + rows * d_a : a_buf.data());
      // Here as aᵀ = Uᵀ m_{t−1}ᵀ [+ W_bᵀ c_t] on whole vectors of samples, then a = pre + a.
      transpose(m_t.data(), bp, m_prev, d_m, batch, d_m);
      std::fill(a_t.begin(), a_t.end(), T(0));
      add_mat_mat_t(a_t.data(), m_t.data(), u + k * d_m * d_a, d_m, d_a, bp);
      if (fb)
        add_mat_mat_t(a_t.data(), c.data() + k * d_tree * bp,
                      in<T>(s.w_branch) + k * d_tree * d_a, d_tree, d_a, bp);
      transpose(a, d_a, a_t.data(), bp, d_a, batch);
      for (int64_t b = 0; b < batch; ++b) {
        const T* __restrict p = s.tokens ? pre + (s.tokens[t * batch + b] * n + k) * d_a
                                         : pre + (rows + b) * d_a;
        T* __restrict ab = a + b * d_a;
        for (int64_t j = 0; j < d_a; ++j) ab[j] += p[j];
      }
      // h = σ(a), a ← h V + v through the layers; the last gives z_t.
      for (int64_t l = 0; l < n_layers; ++l) {
        const int64_t w_in = s.widths[l], w_out = s.widths[l + 1];
        activate(h_buf.data(), a, batch * w_in, act);
        T* next = l == n_layers - 1
                      ? mlp_out + rows * d_m
                      : (keep ? out<T>(s.acts[l + 1]) + rows * w_out : a_buf.data());
        copy(next, in<T>(s.biases[l]) + states * w_out, batch * w_out);
        add_mat_mat(next, h_buf.data(), in<T>(s.weights[l]) + k * w_in * w_out, batch, w_in,
                    w_out);
        a = next;
      }
      const T* z = a;
      // m_t = κ ⊙ m_{t−1} + g ⊙ tanh(z_t)
      T* m = memories + rows * d_m;
      const T* kap = kappa + states * d_m;
      const T* gn = gain + states * d_m;
      tanh_all(th.data(), z, batch * d_m);
      for (int64_t j = 0; j < batch * d_m; ++j) m[j] = kap[j] * m_prev[j] + gn[j] * th[j];
      if (fb) {
        // r_t = m_t · w_y, r̄_t = r̄_{t−1} + (1 − κ_r)(r_t − r̄_{t−1}), o_t = relu(r − r̄ + β)
        const T* wy = in<T>(s.w_y) + k * d_m;
        for (int64_t b = 0; b < batch; ++b) {
          const int64_t state = states + b;
          T r = T(0);
          for (int64_t j = 0; j < d_m; ++j) r += m[b * d_m + j] * wy[j];
          const T hp_prev =
              t == 0 ? in<T>(s.highpass0)[state] : highpasses[(t - 1) * nb + state];
          const T hp = hp_prev + leak_r * (r - hp_prev);
          highpasses[t * nb + state] = hp;
          const T o = r - hp + in<T>(s.beta)[k];
          outputs[t * nb + state] = o > T(0) ? o : T(0);
        }
      }
    }
  }
}

// ---- The bank's forward loop at small batch: neurons across the lanes ----
//
// `bank_forward` puts samples in the vector lanes: at batch 1–8 most lanes of every
// vector are padding, and each neuron's step is many short loops over its own small
// weights. All neurons run the same program on their own weights, so here L consecutive
// neurons (16 float32, 8 float64) form
// one group that shares every vector: the weights are re-laid out once per call so that
// entry (i, j) of a group's L neurons is one contiguous vector, and each stage of the step
// (the products, σ, tanh, the memory update, readout, high-pass and ReLU) is one
// full-width operation per entry. Groups are the outer loop and samples the inner one, so
// a group's weights (≈25 KB at the SHD-Adding sizes) stay in L1 across the samples.
//
// The recurrent branch sums c[n, j] = Σ_s S[(n, j), s] q[s] are gathers of q per lane: for
// each (group, branch) the entries of its L rows, in CSR order, padded to the longest row
// with masked-off lanes, are K index vectors and K value vectors (`branch_sums`). Each
// output element is summed in the order `bank_forward` uses (m U, then c W_b, then pre;
// the bias, then the products, in later layers), so float64 stays within rounding of it
// and of the eager path. pre is read and every result written in the (T, N, B, ·) layouts
// through strided gathers and scatters of one group's lanes (masked in the tail group),
// the pre-activations a^l too when the backward pass needs them (acts not null).
// Without feedback (d_tree 0) the same loop serves a bank of plain neurons (the network's
// readout).

// y[l] = x[l · stride] for lanes l < live, 0 beyond; idx holds l · stride.
template <typename T>
inline Vec<T> gather_lanes(const T* x, const int32_t* idx, int64_t live) {
#if defined(__AVX512F__)
  constexpr int64_t L = kVecLanes<T>;
  if constexpr (std::is_same_v<T, float>) {
    const __mmask16 mask = live >= L ? __mmask16(0xFFFF) : __mmask16((1u << live) - 1);
    const __m512i vi = _mm512_loadu_si512(idx);
    return __builtin_bit_cast(Vec<T>, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, vi,
                                                               x, sizeof(float)));
  } else {
    const __mmask8 mask = live >= L ? __mmask8(0xFF) : __mmask8((1u << live) - 1);
    const __m256i vi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx));
    return __builtin_bit_cast(Vec<T>, _mm512_mask_i32gather_pd(_mm512_setzero_pd(), mask, vi,
                                                               x, sizeof(double)));
  }
#else
  Vec<T> v{};
  for (int64_t l = 0; l < live; ++l) v[l] = x[idx[l]];
  return v;
#endif
}

// x[idx[l]] = v[l] for lanes l < live.
template <typename T>
inline void scatter_lanes(T* x, const int32_t* idx, Vec<T> v, int64_t live) {
#if defined(__AVX512F__)
  constexpr int64_t L = kVecLanes<T>;
  if constexpr (std::is_same_v<T, float>) {
    const __mmask16 mask = live >= L ? __mmask16(0xFFFF) : __mmask16((1u << live) - 1);
    _mm512_mask_i32scatter_ps(x, mask, _mm512_loadu_si512(idx), __builtin_bit_cast(__m512, v),
                              sizeof(float));
  } else {
    const __mmask8 mask = live >= L ? __mmask8(0xFF) : __mmask8((1u << live) - 1);
    _mm512_mask_i32scatter_pd(x, mask,
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)),
                              __builtin_bit_cast(__m512d, v), sizeof(double));
  }
#else
  for (int64_t l = 0; l < live; ++l) x[idx[l]] = v[l];
#endif
}

// Asks for [first, end) in cache ahead of its use, a line at a time: for blocks of rows
// far apart in memory, which the hardware's prefetchers (within a 4 KiB page) miss. With
// kWrite, to be written (the line fetched for ownership).
template <bool kWrite = false, typename T>
inline void prefetch(const T* first, const T* end) {
  const char* last = reinterpret_cast<const char*>(end);
  for (auto* a = reinterpret_cast<const char*>(first); a < last; a += 64)
    __builtin_prefetch(a, kWrite ? 1 : 0, 3);
}

// Reads one value of each cache line of [first, end), in order. Before a loop that reads
// rows far apart a little at a time (a neuron's rows of a run of steps), it brings them in
// at the memory's streaming rate: the loads in order start the hardware's prefetchers,
// where prefetch instructions for the same rows changed nothing (measured on AMD EPYC).
template <typename T>
inline void touch(const T* first, const T* end) {
  const char* last = reinterpret_cast<const char*>(end);
  for (auto* a = reinterpret_cast<const char*>(first); a < last; a += 64) {
    const char v = *reinterpret_cast<const volatile char*>(a);
    asm volatile("" : : "r"(v));
  }
}

template <typename T>
inline Vec<T> load_vec(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store_vec(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

// Y[r] += Σ_i X[i] ⊙ W_i,r for J outputs, every operand a vector of L lanes, W_i,r at
// w + i · step_i + r · step_r; X (n_in, L), Y (J, L). The J accumulators stay in registers
// while the inputs stream past; each lane's sum runs in input order.
template <typename T, int J>
inline void lane_tile(T* __restrict y, const T* __restrict x, const T* __restrict w,
                      int64_t n_in, int64_t step_i, int64_t step_r) {
  constexpr int64_t L = kVecLanes<T>;
  Vec<T> acc[J];
  for (int r = 0; r < J; ++r) acc[r] = load_vec(y + r * L);
  for (int64_t i = 0; i < n_in; ++i) {
    const Vec<T> xv = load_vec(x + i * L);
    const T* wi = w + i * step_i;
    for (int r = 0; r < J; ++r) acc[r] += xv * load_vec(wi + r * step_r);
  }
  for (int r = 0; r < J; ++r) store_vec(y + r * L, acc[r]);
}

// Y[j] += Σ_i X[i] ⊙ W[i, j], W (n_in, n_out, L): outputs j on, J at a time.
template <typename T, int J>
inline void lane_outputs(T* y, const T* x, const T* w, int64_t n_in, int64_t n_out, int64_t j) {
  constexpr int64_t L = kVecLanes<T>;
  for (; j + J <= n_out; j += J) lane_tile<T, J>(y + j * L, x, w + j * L, n_in, n_out * L, L);
  if constexpr (J > 1) lane_outputs<T, J / 2>(y, x, w, n_in, n_out, j);
}

// Y[r] += Σ_j X[j] ⊙ W[r, j] for the rows r of W (rows, cols, L): the product by Wᵀ from
// W as the forward lays it out (the reverse-time lanes loop), J rows at a time, each read
// along its columns; each lane's sum in column order.
template <typename T, int J = 8>
inline void lane_dots(T* y, const T* x, const T* w, int64_t rows, int64_t cols, int64_t r = 0) {
  constexpr int64_t L = kVecLanes<T>;
  for (; r + J <= rows; r += J) lane_tile<T, J>(y + r * L, x, w + r * cols * L, cols, L, cols * L);
  if constexpr (J > 1) lane_dots<T, J / 2>(y, x, w, rows, cols, r);
}

// A buffer whose data starts on a 64-byte boundary, so that the lane vectors never
// straddle cache lines: zero-filled, or left as it comes where the caller writes all of it
// (the weights in lane layout, `to_lanes`: filling them first had been a tenth of the
// fixed cost of an Enwik8 training call).
template <typename T>
struct LaneBuffer {
  std::unique_ptr<T[]> raw;
  T* p;
  explicit LaneBuffer(int64_t size, bool zeroed = true) : raw(new T[size + kVecLanes<T>]) {
    const auto address = reinterpret_cast<uintptr_t>(raw.get());
    p = raw.get() + ((64 - address % 64) % 64) / sizeof(T);
    if (zeroed) std::fill(raw.get(), raw.get() + size + kVecLanes<T>, T(0));
  }
};

// Lane offsets l · stride of one group's neurons in a (·, N, B, width) layout.
template <typename T>
std::vector<int32_t> lane_steps(int64_t stride) {
  std::vector<int32_t> steps(kVecLanes<T>);
  for (int64_t l = 0; l < kVecLanes<T>; ++l) steps[l] = static_cast<int32_t>(l * stride);
  return steps;
}

// One group's rows of a (·, N, B, width) tensor ↔ its lane layout (width, L), by block
// transposes: the rows of lanes [0, live), `ld` apart, each `width` long, read and written
// whole. They replace a gather or scatter per column (L cache lines each), which perf had
// put at a sixth of `bank_backward_lanes` (Enwik8, batch 1); the transposes take about 5 %
// of that training step, and the step's time moved within its noise. rows_to_lanes
// zeroes the lanes past `live`.
template <typename T>
void rows_to_lanes(T* dst, const T* src, int64_t ld, int64_t width, int64_t live) {
  if (live < kVecLanes<T>) std::fill(dst, dst + width * kVecLanes<T>, T(0));
  transpose(dst, kVecLanes<T>, src, ld, live, width);
}

template <typename T>
void lanes_to_rows(T* dst, int64_t ld, const T* src, int64_t width, int64_t live) {
  transpose(dst, ld, src, kVecLanes<T>, width, live);
}

// (N, rows, cols) per-neuron weights → (groups, rows, cols, L), neuron g·L + l in lane l
// (into rows [row0, row0 + rows) of dst_rows); lanes past N are zeroed. A group is one
// transpose of its L neurons' blocks: the scalar copy, one strided store per weight, had
// been most of a short Enwik8 forward's setup per call.
template <typename T>
void to_lanes(T* dst, const T* src, int64_t n, int64_t rows, int64_t cols, int64_t dst_rows,
              int64_t row0) {
  constexpr int64_t L = kVecLanes<T>;
  const int64_t size = rows * cols;
  for (int64_t g = 0; g * L < n; ++g) {
    T* group = dst + (g * dst_rows + row0) * cols * L;
    if (n - g * L < L) std::fill(group, group + size * L, T(0));
    transpose(group, L, src + g * L * size, size, std::min(L, n - g * L), size);
  }
}

// (N, B, width) → (groups, B, width, L).
template <typename T>
void states_to_lanes(T* dst, const T* src, int64_t n, int64_t batch, int64_t width) {
  to_lanes(dst, src, n, batch * width, 1, batch * width, 0);
}

// Per gather entry: the live lanes, then for pairs 1…3 of q's vectors the lanes whose
// source lies in that pair.
constexpr int64_t kMaskWords = 4;

#if defined(__AVX512F__)
// The AVX-512 operations of `branch_sums`, one name each for float32 (16 lanes, mask 16
// bits) and float64 (8 lanes: int32 indices widened to 64 bits), so that its loop is
// written once.
inline __m512i lane_index(const int32_t* p, float) { return _mm512_loadu_si512(p); }
inline __m512i lane_index(const int32_t* p, double) {
  // The zero-masked form: the plain one trips a false uninitialised warning in GCC 12.
  return _mm512_maskz_cvtepi32_epi64(
      __mmask8(0xFF), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// q[index[l]] in the lanes set in m, zero in the others; only those lanes' indices are
// read (a row's last entries may end anywhere).
inline Vec<float> gather_lanes(__mmask16 m, const int32_t* index, const float* q) {
  return __builtin_bit_cast(
      Vec<float>, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m,
                                           _mm512_maskz_loadu_epi32(m, index), q, sizeof(float)));
}
inline Vec<double> gather_lanes(__mmask8 m, const int32_t* index, const double* q) {
  const __m512i vi = _mm512_maskz_loadu_epi32(__mmask16(m), index);
  return __builtin_bit_cast(
      Vec<double>, _mm512_mask_i32gather_pd(_mm512_setzero_pd(), m, _mm512_castsi512_si256(vi),
                                            q, sizeof(double)));
}
inline Vec<float> permute2(Vec<float> lo, __m512i index, Vec<float> hi) {
  return __builtin_bit_cast(
      Vec<float>, _mm512_permutex2var_ps(__builtin_bit_cast(__m512, lo), index,
                                         __builtin_bit_cast(__m512, hi)));
}
inline Vec<double> permute2(Vec<double> lo, __m512i index, Vec<double> hi) {
  return __builtin_bit_cast(
      Vec<double>, _mm512_permutex2var_pd(__builtin_bit_cast(__m512d, lo), index,
                                          __builtin_bit_cast(__m512d, hi)));
}
// b where m is set, else a.
inline Vec<float> blend(__mmask16 m, Vec<float> a, Vec<float> b) {
  return __builtin_bit_cast(Vec<float>, _mm512_mask_mov_ps(__builtin_bit_cast(__m512, a), m,
                                                           __builtin_bit_cast(__m512, b)));
}
inline Vec<double> blend(__mmask8 m, Vec<double> a, Vec<double> b) {
  return __builtin_bit_cast(Vec<double>, _mm512_mask_mov_pd(__builtin_bit_cast(__m512d, a), m,
                                                            __builtin_bit_cast(__m512d, b)));
}
// a · b + c where m is set, else c (one rounding).
inline Vec<float> fmadd_masked(Vec<float> a, Vec<float> b, Vec<float> c, __mmask16 m) {
  return __builtin_bit_cast(
      Vec<float>, _mm512_mask3_fmadd_ps(__builtin_bit_cast(__m512, a),
                                        __builtin_bit_cast(__m512, b),
                                        __builtin_bit_cast(__m512, c), m));
}
inline Vec<double> fmadd_masked(Vec<double> a, Vec<double> b, Vec<double> c, __mmask8 m) {
  return __builtin_bit_cast(
      Vec<double>, _mm512_mask3_fmadd_pd(__builtin_bit_cast(__m512d, a),
                                         __builtin_bit_cast(__m512d, b),
                                         __builtin_bit_cast(__m512d, c), m));
}
#endif

// Σ_e value[e] · x[index[e]] over e in [begin, end): a hardware gather per L entries, the
// last ones masked (nothing read past `end`), two sums in flight; the lanes added as a
// tree at the end.
template <typename T>
inline T gather_dot(const T* x, const int32_t* index, const T* value, int64_t begin,
                    int64_t end) {
#if defined(__AVX512F__)
  constexpr int64_t L = kVecLanes<T>;
  using M = std::conditional_t<std::is_same_v<T, float>, __mmask16, __mmask8>;
  const M all = M(~0u);
  Vec<T> sum0{}, sum1{};
  int64_t e = begin;
  for (; e + 2 * L <= end; e += 2 * L) {
    sum0 += load_vec(value + e) * gather_lanes(all, index + e, x);
    sum1 += load_vec(value + e + L) * gather_lanes(all, index + e + L, x);
  }
  for (; e < end; e += L) {
    const int64_t count = std::min(L, end - e);
    sum0 += load_head(value + e, count) * gather_lanes(M((1u << count) - 1), index + e, x);
  }
  return lane_sum<T>(sum0 + sum1);
#else
  T sum = 0;
  for (int64_t e = begin; e < end; ++e) sum += value[e] * x[index[e]];
  return sum;
#endif
}

// c[j] = Σ_e value_e ⊙ q[index_e] over the entries [first[j], first[j + 1]) of each
// branch j, in entry order per lane (lanes with a clear live bit add nothing: masked off,
// or with P = 0 value 0 times q's zero past N). P > 0: q (P pairs of vectors, 2·L·P ≥ N)
// is held in registers and each entry picks its lanes with one two-vector permute per pair
// (a few cycles; a hardware gather issues L loads); P = 0: hardware gathers, for larger N.
template <typename T, int P>
void branch_sums(T* c_out, const T* q, const int32_t* index, const T* value,
                 const uint32_t* masks, const int64_t* first, int64_t d_tree) {
  constexpr int64_t L = kVecLanes<T>;
#if defined(__AVX512F__)
  using M = std::conditional_t<std::is_same_v<T, float>, __mmask16, __mmask8>;
  Vec<T> lo[P > 0 ? P : 1], hi[P > 0 ? P : 1];
  for (int p = 0; p < P; ++p) {
    lo[p] = load_vec(q + 2 * p * L);
    hi[p] = load_vec(q + (2 * p + 1) * L);
  }
  for (int64_t j = 0; j < d_tree; ++j) {
    Vec<T> c{};
    for (int64_t e = first[j]; e < first[j + 1]; e += L) {
      if constexpr (P == 0) {  // padding reads q's zero past N: no masks to load
        c += load_vec(value + e) * gather_lanes(M(~0u), index + e, q);
      } else {
        const uint32_t* m = masks + (e / L) * kMaskWords;
        const __m512i vi = lane_index(index + e, T{});
        Vec<T> r = permute2(lo[0], vi, hi[0]);
        for (int p = 1; p < P; ++p) r = blend(M(m[p]), r, permute2(lo[p], vi, hi[p]));
        c = fmadd_masked(load_vec(value + e), r, c, M(m[0]));
      }
    }
    store_vec(c_out + j * L, c);
  }
#else
  for (int64_t j = 0; j < d_tree; ++j) {
    Vec<T> c{};
    for (int64_t e = first[j]; e < first[j + 1]; e += L) {
      const uint32_t live = masks[(e / L) * kMaskWords];
      for (int64_t l = 0; l < L; ++l)
        if (live >> l & 1u) c[l] += value[e + l] * q[index[e + l]];
    }
    store_vec(c_out + j * L, c);
  }
#endif
}

// The gather lists of `branch_sums` for a CSR matrix's rows taken L at a time: list (g, j)
// holds, in lane l, the entries of row (g·L + l)·width + j in order (none past n·width
// rows), padded to the longest of its L rows with lanes whose live bit is clear, value 0
// and index n: the gathered vector is zero there, so the gathers past 8 vectors of
// sources take every lane without a mask. index[e] is where entry e reads its source in
// the gathered vector. The layout follows from the sparsity pattern alone, so the caller
// builds it once and keeps it (`ElmArgs::lanes`, elmnet/cpp_loop.py's `lane_layout`);
// each call puts in the values (`lane_values`). Built every call, it had been most of a
// one-step call's forward at Enwik8's batch 1.
//
// Sizes only when `first` is null (the return value: entries in all lists, a multiple of
// L); else also fills first (groups · width + 1), index (size) and masks (size / L ·
// kMaskWords), the masks zero on entry, and pos: where entry e of the matrix sits in the
// lists.
template <typename T>
int64_t build_lane_layout(int64_t n, int64_t width, const int32_t* crow, const int32_t* index,
                          int64_t* first, int32_t* lane_index, uint32_t* masks, int32_t* pos) {
  constexpr int64_t L = kVecLanes<T>;
  const int64_t groups = (n + L - 1) / L;
  int64_t size = 0;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t j = 0; j < width; ++j) {
      int64_t count = 0;
      for (int64_t l = 0; l < std::min(L, n - g * L); ++l) {
        const int64_t row = (g * L + l) * width + j;
        count = std::max<int64_t>(count, crow[row + 1] - crow[row]);
      }
      if (first) first[g * width + j] = size;
      size += count * L;
      if (!first) continue;
      std::fill(lane_index + first[g * width + j], lane_index + size, static_cast<int32_t>(n));
      for (int64_t l = 0; l < std::min(L, n - g * L); ++l) {
        const int64_t row = (g * L + l) * width + j;
        for (int32_t e = crow[row]; e < crow[row + 1]; ++e) {
          const int64_t at = first[g * width + j] + (e - crow[row]) * L + l;
          lane_index[at] = index[e];
          pos[e] = static_cast<int32_t>(at);
          uint32_t* m = masks + (at / L) * kMaskWords;
          m[0] |= 1u << l;
          const int64_t pair = index[e] / (2 * L);
          if (pair > 0 && pair < kMaskWords) m[pair] |= 1u << l;
        }
      }
    }
  if (first) first[groups * width] = size;
  return size;
}

// This call's values of S in the lists or rows of one of the caller's layouts
// (ElmArgs::lanes or lanes_t), zero in the padding.
template <typename T>
std::vector<T> lane_values(const ElmArgs& s, const LaneLayout& layout) {
  std::vector<T> value(layout.size, T(0));
  const T* values = in<T>(s.values);
  const int64_t nnz = values ? s.crow[s.n * s.d_tree] : 0;
  for (int64_t e = 0; e < nnz; ++e) value[layout.pos[e]] = values[e];
  return value;
}

// c = S q into c's lane layout (groups, d_tree, L; `size` values), pushed from the
// sources: each source k with q[k] ≠ 0 adds q[k] times its row of Sᵀ (ElmArgs::lanes_t,
// `value` its values) to the branches it reaches. Silent sources cost nothing, where the
// gather lists of `branch_sums` read every entry; each branch is summed over its sources
// in ascending order.
template <typename T>
__attribute__((noinline)) void push_sums(T* __restrict c, int64_t size, const T* __restrict q,
                                         int64_t n, const LaneLayout& rows,
                                         const T* __restrict value) {
  std::fill(c, c + size, T(0));
  const int32_t* __restrict index = rows.index;
  const int64_t* __restrict first = rows.first;
  for (int64_t k = 0; k < n; ++k) {
    const T qk = q[k];
    if (qk == T(0)) continue;
#pragma GCC unroll 4
    for (int64_t e = first[k]; e < first[k + 1]; ++e) c[index[e]] += value[e] * qk;
  }
}

// Past 4 pairs of vectors of sources (where the gathers of `branch_sums` take hardware
// gathers), a step whose sources are at most this share active (q ≠ 0) takes `push_sums`.
// For Enwik8's S (N 742, 441k synapses; all in cache, 1 thread): the gathers 140 µs a
// step whatever the activity, the pushes 100 µs with half the sources active and about
// twice that with all.
constexpr double kPushMaxActive = 0.625;

// The weights a bank's lanes loops multiply by, in lane layout as the forward reads them:
// the first layer's (groups, d_m + d_tree, d_a, L), U's rows first, then W_b's; then each
// later layer's (groups, in, out, L). The reverse-time loop reads the same (`lane_dots`).
// Where each starts, in values from the first's, then where the last ends (the size).
template <typename T>
std::vector<int64_t> lane_weight_offsets(const ElmArgs& s) {
  constexpr int64_t L = kVecLanes<T>;
  const int64_t lanes = (s.n + L - 1) / L * L;
  std::vector<int64_t> at{0, lanes * (s.d_m + (s.feedback ? s.d_tree : 0)) * s.widths[0]};
  for (int64_t l = 0; l < s.n_layers; ++l)
    at.push_back(at.back() + lanes * s.widths[l] * s.widths[l + 1]);
  return at;
}

// Where each layer's lane-layout weights start in `base`.
template <typename T>
std::vector<T*> lane_weight_starts(const ElmArgs& s, T* base) {
  const std::vector<int64_t> at = lane_weight_offsets<T>(s);
  std::vector<T*> starts;
  for (size_t l = 0; l + 1 < at.size(); ++l) starts.push_back(base + at[l]);
  return starts;
}

// Lays them out into dst (`lane_weight_offsets`' last value of them); returns each layer's
// start.
template <typename T>
std::vector<T*> lay_out_weights(const ElmArgs& s, T* dst) {
  const int64_t n = s.n, d_m = s.d_m, d_a = s.widths[0];
  const int64_t d_tree = s.feedback ? s.d_tree : 0, d_in = d_m + d_tree;
  const std::vector<T*> starts = lane_weight_starts<T>(s, dst);
  to_lanes(starts[0], in<T>(s.u), n, d_m, d_a, d_in, 0);
  if (d_tree) to_lanes(starts[0], in<T>(s.w_branch), n, d_tree, d_a, d_in, d_m);
  for (int64_t l = 0; l < s.n_layers; ++l) {
    const int64_t w_in = s.widths[l], w_out = s.widths[l + 1];
    to_lanes(starts[l + 1], in<T>(s.weights[l]), n, w_in, w_out, w_in, 0);
  }
  return starts;
}

template <typename T>
void bank_forward_lanes(const ElmArgs& s) {
  constexpr int64_t L = kVecLanes<T>;
  const int64_t n_steps = s.n_steps, n = s.n, batch = s.batch, d_m = s.d_m;
  const int64_t n_layers = s.n_layers, act = s.act;
  const bool fb = s.feedback != 0, acts_kept = s.acts != nullptr;
  const int64_t d_tree = fb ? s.d_tree : 0, d_a = s.widths[0];
  const int64_t groups = (n + L - 1) / L, np = groups * L;
  const int64_t d_in = d_m + d_tree;  // inputs of the first layer: m_{t−1}, then c_t
  const int64_t widest = *std::max_element(s.widths, s.widths + n_layers + 1);

  // Weights (into ElmArgs::lane_weights where given) and per-state coefficients in lane
  // layout.
  LaneBuffer<T> own(s.lane_weights ? 0 : lane_weight_offsets<T>(s).back(), false);
  T* weights = s.lane_weights ? out<T>(s.lane_weights) : own.p;
  const std::vector<T*> w_at = lay_out_weights<T>(s, weights);
  const T* w_first = w_at[0];
  std::vector<LaneBuffer<T>> b_layer;
  for (int64_t l = 0; l < n_layers; ++l) {
    const int64_t w_out = s.widths[l + 1];
    b_layer.emplace_back(groups * batch * w_out * L);
    states_to_lanes(b_layer.back().p, in<T>(s.biases[l]), n, batch, w_out);
  }
  LaneBuffer<T> kappa(groups * batch * d_m * L), gain(groups * batch * d_m * L);
  states_to_lanes(kappa.p, in<T>(s.kappa), n, batch, d_m);
  states_to_lanes(gain.p, in<T>(s.gain), n, batch, d_m);
  LaneBuffer<T> memory(groups * batch * d_m * L);
  states_to_lanes(memory.p, in<T>(s.memory), n, batch, d_m);
  LaneBuffer<T> w_y(groups * d_m * L), beta(np);
  // Output state per sample as (B, N padded): the gathers index it by neuron.
  LaneBuffer<T> highpass(batch * np), output(batch * np);
  if (fb) {
    to_lanes(w_y.p, in<T>(s.w_y), n, d_m, 1, d_m, 0);
    std::copy(in<T>(s.beta), in<T>(s.beta) + n, beta.p);
    for (int64_t k = 0; k < n; ++k)
      for (int64_t b = 0; b < batch; ++b) {
        highpass.p[b * np + k] = in<T>(s.highpass0)[k * batch + b];
        output.p[b * np + k] = in<T>(s.output0)[k * batch + b];
      }
  }

  // c_t by the gather lists of `branch_sums`, per (group, branch), or pushed from the
  // active sources (`push_sums`, into c_pushed; pushed[b]: sample b's c_t of this step is
  // there).
  const int64_t q_stride = np + 2 * L;  // q of one sample, zeros past N
  // q of all neurons in registers when it fits 4 pairs of vectors, else hardware gathers.
  const int64_t pairs = (np + 2 * L - 1) / (2 * L);
  const bool pushes = fb && pairs > 4 && s.lanes_t;
  // S's values in the gather lists: built on the first step that gathers.
  std::vector<T> lane_value = fb && !pushes ? lane_values<T>(s, *s.lanes) : std::vector<T>{};
  const std::vector<T> value_t = pushes ? lane_values<T>(s, *s.lanes_t) : std::vector<T>{};
  const int64_t c_stride = groups * d_tree * L;
  LaneBuffer<T> c_pushed(pushes ? batch * c_stride : 0);
  std::vector<char> pushed(batch, 0);
  void (*sums)(T*, const T*, const int32_t*, const T*, const uint32_t*, const int64_t*,
               int64_t) = branch_sums<T, 0>;
  if (pairs == 1) sums = branch_sums<T, 1>;
  if (pairs == 2) sums = branch_sums<T, 2>;
  if (pairs == 3) sums = branch_sums<T, 3>;
  if (pairs == 4) sums = branch_sums<T, 4>;
  LaneBuffer<T> q(fb ? batch * q_stride : 0);

  // Lane offsets l · B of one group in the (·, N, B) layouts of o_t and r̄_t. A group's rows
  // of pre are B · d_a apart; with token input, rows of the table, d_a apart.
  const std::vector<int32_t> step_1 = lane_steps<T>(batch);
  const int64_t pre_stride = s.tokens ? d_a : batch * d_a;
  LaneBuffer<T> x(std::max(d_in, widest) * L), a(widest * L), h(widest * L), th(d_m * L);
  LaneBuffer<T> pre_lanes(d_a * L);

  const T* pre = in<T>(s.pre);
  const T* drop = in<T>(s.drop);
  T* memories = out<T>(s.memories);
  T* mlp_out = out<T>(s.mlp_out);
  T* outputs = out<T>(s.outputs);
  T* highpasses = out<T>(s.highpasses);
  const T leak_r = T(1.0 - s.kappa_r);

  for (int64_t t = 0; t < n_steps; ++t) {
    if (fb)  // q_t = D_t ⊙ o_{t−1}, for every sample before any neuron of step t runs
      for (int64_t b = 0; b < batch; ++b) {
        T* qb = q.p + b * q_stride;
        const T* ob = output.p + b * np;
        if (drop)
          for (int64_t k = 0; k < n; ++k) qb[k] = drop[(t * n + k) * batch + b] * ob[k];
        else
          std::copy(ob, ob + n, qb);
        const auto active = std::count_if(qb, qb + n, [](T v) { return v != T(0); });
        pushed[b] = pushes && active <= kPushMaxActive * n;
        if (pushed[b])
          push_sums(c_pushed.p + b * c_stride, c_stride, qb, n, *s.lanes_t, value_t.data());
        else if (lane_value.empty())
          lane_value = lane_values<T>(s, *s.lanes);
      }
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t live = std::min(L, n - g * L);
      const T* w1 = w_first + g * d_in * d_a * L;
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t rows = (t * n + g * L) * batch + b;  // row of lane 0 in (T, N, B, ·)
        T* m = memory.p + (g * batch + b) * d_m * L;
        // The first layer's inputs: m_{t−1}, then the branch sums c_t.
        std::copy(m, m + d_m * L, x.p);
        if (fb && pushed[b])
          std::copy_n(c_pushed.p + b * c_stride + g * d_tree * L, d_tree * L, x.p + d_m * L);
        else if (fb)
          sums(x.p + d_m * L, q.p + b * q_stride, s.lanes->index, lane_value.data(),
               s.lanes->masks, s.lanes->first + g * d_tree, d_tree);
        // a⁰ = (m_{t−1} U + c_t W_b) + pre_t
        std::fill(a.p, a.p + d_a * L, T(0));
        lane_outputs<T, 8>(a.p, x.p, w1, d_in, d_a, 0);
        const T* pre_g = s.tokens ? pre + (s.tokens[t * batch + b] * n + g * L) * d_a
                                  : pre + rows * d_a;
        {  // the next group's rows of pre (or the first group's of the next step): the wait
           // for Enwik8's token rows had been nearly a fifth of this loop at batch 1 (perf)
          const int64_t g1 = g + 1 < groups ? g + 1 : 0, t1 = g + 1 < groups ? t : t + 1;
          if (t1 < n_steps) {
            const int64_t lanes = std::min(L, n - g1 * L);
            const T* p1 = s.tokens ? pre + (s.tokens[t1 * batch + b] * n + g1 * L) * d_a
                                   : pre + ((t1 * n + g1 * L) * batch + b) * d_a;
            for (int64_t l = 0; l < lanes; ++l)
              prefetch(p1 + l * pre_stride, p1 + l * pre_stride + d_a);
            if (b == 0) {  // and the rows it writes, all its samples'
              const int64_t r0 = (t1 * n + g1 * L) * batch, r1 = r0 + lanes * batch;
              prefetch<true>(mlp_out + r0 * d_m, mlp_out + r1 * d_m);
              prefetch<true>(memories + r0 * d_m, memories + r1 * d_m);
              for (int64_t l = 0; l < n_layers && acts_kept; ++l) {
                const T* a1 = out<T>(s.acts[l]);
                prefetch<true>(a1 + r0 * s.widths[l], a1 + r1 * s.widths[l]);
              }
            }
          }
        }
        rows_to_lanes(pre_lanes.p, pre_g, pre_stride, d_a, live);
        for (int64_t j = 0; j < d_a; ++j)
          store_vec(a.p + j * L, load_vec(a.p + j * L) + load_vec(pre_lanes.p + j * L));
        // h = σ(a), a ← v + h V through the layers; the last gives z_t.
        for (int64_t l = 0; l < n_layers; ++l) {
          const int64_t w_in = s.widths[l], w_out = s.widths[l + 1];
          if (acts_kept)  // a^l, where the backward pass reads it
            lanes_to_rows(out<T>(s.acts[l]) + rows * w_in, batch * w_in, a.p, w_in, live);
          activate(h.p, a.p, w_in * L, act);
          std::copy_n(b_layer[l].p + (g * batch + b) * w_out * L, w_out * L, a.p);
          lane_outputs<T, 8>(a.p, h.p, w_at[l + 1] + g * w_in * w_out * L, w_in, w_out, 0);
        }
        // m_t = κ ⊙ m_{t−1} + g ⊙ tanh(z_t)
        tanh_all(th.p, a.p, d_m * L);
        const T* kap = kappa.p + (g * batch + b) * d_m * L;
        const T* gn = gain.p + (g * batch + b) * d_m * L;
        for (int64_t j = 0; j < d_m * L; ++j) m[j] = kap[j] * x.p[j] + gn[j] * th.p[j];
        lanes_to_rows(mlp_out + rows * d_m, batch * d_m, a.p, d_m, live);
        lanes_to_rows(memories + rows * d_m, batch * d_m, m, d_m, live);
        if (fb) {
          // r_t = m_t · w_y, r̄_t = r̄_{t−1} + (1 − κ_r)(r_t − r̄_{t−1}), o_t = relu(r − r̄ + β)
          Vec<T> r{};
          for (int64_t j = 0; j < d_m; ++j)
            r += load_vec(m + j * L) * load_vec(w_y.p + (g * d_m + j) * L);
          T* hp_b = highpass.p + b * np + g * L;
          T* o_b = output.p + b * np + g * L;
          const Vec<T> hp_prev = load_vec(hp_b);
          const Vec<T> hp = hp_prev + leak_r * (r - hp_prev);
          const Vec<T> o = r - hp + load_vec(beta.p + g * L);
          const Vec<T> relu = o > T(0) ? o : Vec<T>{};
          store_vec(hp_b, hp);
          store_vec(o_b, relu);
          scatter_lanes(highpasses + rows, step_1.data(), hp, live);
          scatter_lanes(outputs + rows, step_1.data(), relu, live);
        }
      }
    }
  }
}

// Up to half a vector of samples (batch 8 in float32, 4 in float64), forward passes run
// `bank_forward_lanes`: its cost grows with the batch
// (one sample at a time), the batch-inner loop's stays nearly flat up to a vector of
// samples. Measured per step (1 thread, shared 2-core machine; lanes vs batch-inner, µs):
// SHD-Adding (N 96) float32 batch 1: 8 vs 52, 8: 53 vs 68, 16: 88 vs 92; float64 batch 4:
// 65 vs 132, 8: 134 vs 117; the small sweep bank (N 24) float32 batch 8: 12 vs 19, 16: 20 vs
// 23; float64 batch 4: 16 vs 18, 8: 29 vs 28.
// Past 8 vectors of neurons (float32 N > 128, float64 N > 64) the branch sums take
// hardware gathers (or pushes from the active sources) and the lanes loop wins only at
// the smaller batches: the Enwik8 bank (N 742, d_m 20) float32, per step, lanes vs
// batch-inner: batch 1 856 vs 1653 µs, 2 1172 vs 1709, 4 1744 vs 1754, 8 2901 vs 2027 (1
// thread, quiet machine); once the branch sums pushed from the active sources (inference,
// in one process, 12 alternations; another day): batch 2 603 vs 595 µs (both lanes), 4
// 1085 vs 1490, 8 2577 vs 2594. There the limit is half of the above (float64 by the same
// rule, not measured).
template <typename T>
constexpr int64_t kLanesMaxBatch = kVecLanes<T> / 2;

template <typename T>
inline int64_t lanes_max_batch(int64_t n) {
  return n <= 8 * kVecLanes<T> ? kLanesMaxBatch<T> : kLanesMaxBatch<T> / 2;
}

// Whether a forward call runs `bank_forward_lanes` (with feedback, else see below).
template <typename T>
inline bool forward_on_lanes(const ElmArgs& s) {
  if (s.feedback) return s.batch <= lanes_max_batch<T>(s.n);
  return s.n >= kVecLanes<T> / 2 && s.batch <= kLanesMaxBatch<T>;
}

template <typename T>
void bank_forward_any(const ElmArgs& s) {
  if (forward_on_lanes<T>(s))
    bank_forward_lanes<T>(s);
  else
    bank_forward<T>(s);
}

// Without feedback: a bank of at least half a vector of neurons (the network's readout) at
// up to half a vector of samples takes the lanes loop (no branch sums, so no hardware
// gathers at any N); a single neuron (the NeuronIO surrogate) keeps the register-tiled
// `plain_forward`, which fills the lanes with samples. Per step, float32, 1 thread, lanes vs
// plain (µs, including the call's fixed cost over 100 steps): the SHD-Adding readout (N 19,
// d_m 3, linear) batch 1 0.8 vs 1.9, 8 1.9 vs 3.0, 16 3.4 vs 3.3; the Enwik8 readout
// (N 256) batch 1 2.2 vs 16.6, 8 10.5 vs 24.9, 16 21.8 vs 29.3.
template <typename T>
void plain_forward_any(const ElmArgs& s) {
  if (forward_on_lanes<T>(s))
    bank_forward_lanes<T>(s);
  else
    plain_forward<T>(s);
}

// out (p × q, row-major) += Σ_{t < n_steps, b < batch} x_{t,b}ᵀ y_{t,b}, x_{t,b} = xrow(t, b)
// (p values, `xs` apart) and y_{t,b} = yrow(t, b) (q values). Register tiles of H rows of
// out by V vectors of columns (up to 8 × 3: 24 accumulators), so each (t, b) costs H · V
// multiply-adds for H broadcasts and V loads, with no memory accumulator to wait on; every
// element is summed over t, then b, in order. (One vector per tile had made a load for
// each multiply-add: Enwik8's weight sums at batch 1 ran at a third of the FMA rate.)
template <typename T, int H, int V, typename XRow, typename YRow>
void outer_tile(T* out, int64_t q, int64_t i0, int64_t j0, int64_t n_steps, int64_t batch,
                XRow xrow, int64_t xs, YRow yrow) {
  constexpr int64_t L = kVecLanes<T>;
  int64_t w[V];
  for (int v = 0; v < V; ++v) w[v] = std::min(L, q - j0 - v * L);
  Vec<T> acc[H][V];
#pragma GCC unroll 8
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) acc[h][v] = load_head(out + (i0 + h) * q + j0 + v * L, w[v]);
  for (int64_t t = 0; t < n_steps; ++t)
    for (int64_t b = 0; b < batch; ++b) {
      const T* x = xrow(t, b) + i0 * xs;
      const T* yr = yrow(t, b) + j0;
      Vec<T> y[V];
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) y[v] = load_head(yr + v * L, w[v]);
#pragma GCC unroll 8
      for (int h = 0; h < H; ++h) {
        const T xh = x[h * xs];
#pragma GCC unroll 3
        for (int v = 0; v < V; ++v) acc[h][v] += xh * y[v];
      }
    }
#pragma GCC unroll 8
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) store_head(out + (i0 + h) * q + j0 + v * L, acc[h][v], w[v]);
}

// The tiles of all p rows for V vectors of columns from j0: 8 rows at a time, the rest in
// one tile (two tiles for SHD-Adding's five rows had read y twice).
template <typename T, int V, typename XRow, typename YRow>
void outer_column(T* out, int64_t p, int64_t q, int64_t j0, int64_t n_steps, int64_t batch,
                  XRow xrow, int64_t xs, YRow yrow) {
  int64_t i0 = 0;
  for (; i0 + 8 <= p; i0 += 8) outer_tile<T, 8, V>(out, q, i0, j0, n_steps, batch, xrow, xs, yrow);
  switch (p - i0) {
#define ELM_OUTER_CASE(H) \
  case H: outer_tile<T, H, V>(out, q, i0, j0, n_steps, batch, xrow, xs, yrow); break;
    ELM_OUTER_CASE(1) ELM_OUTER_CASE(2) ELM_OUTER_CASE(3) ELM_OUTER_CASE(4)
    ELM_OUTER_CASE(5) ELM_OUTER_CASE(6) ELM_OUTER_CASE(7)
#undef ELM_OUTER_CASE
  }
}

// Every tile runs over a block of steps before the next block (≈ 32 KB of x and y, so
// that the tiles after the first read it from L1): tile by tile over all steps, each
// tile's pass read the rows again from beyond L2, and the loads waited.
template <typename T, typename XRow, typename YRow>
void outer_sum(T* out, int64_t p, int64_t q, int64_t n_steps, int64_t batch, XRow xrow,
               int64_t xs, YRow yrow) {
  constexpr int64_t L = kVecLanes<T>;
  const int64_t block = std::max<int64_t>(1, (32 << 10) / (sizeof(T) * batch * (p + q)));
  for (int64_t t0 = 0; t0 < n_steps; t0 += block) {
    const int64_t steps = std::min(block, n_steps - t0);
    for (int64_t t = t0 + block; t < std::min(n_steps, t0 + 2 * block); ++t) {
      prefetch(xrow(t, 0), xrow(t, batch - 1) + (p - 1) * xs + 1);
      prefetch(yrow(t, 0), yrow(t, batch - 1) + q);
    }
    auto x = [&](int64_t t, int64_t b) { return xrow(t0 + t, b); };
    auto y = [&](int64_t t, int64_t b) { return yrow(t0 + t, b); };
    for (int64_t j0 = 0; j0 < q; j0 += 3 * L)
      switch (std::min<int64_t>(3, vectors_for(q - j0, L))) {
        case 1: outer_column<T, 1>(out, p, q, j0, steps, batch, x, xs, y); break;
        case 2: outer_column<T, 2>(out, p, q, j0, steps, batch, x, xs, y); break;
        default: outer_column<T, 3>(out, p, q, j0, steps, batch, x, xs, y);
      }
  }
}

// One neuron's rows of a run of steps: row b of step t at p + t·step + b·width (c_t's
// batch-inner rows: width 1, a branch's samples contiguous and the branches ldc apart).
template <typename T>
struct Rows {
  const T* p;
  int64_t step, width;
  const T* operator()(int64_t t, int64_t b) const { return p + t * step + b * width; }
};

// The weight gradients of the recurrence, zeroed on construction and summed a neuron's
// run of steps at a time (`add`): after a reverse-time loop, a chunk of steps from the
// stored per-step gradients (`weight_grads`); inside the bank's batch-inner loop, each step
// as it is computed (`bank_backward`, so its steps come last to first). Per neuron, each
// sum over the run's steps, then samples, in order:
//   ∂L/∂U = Σ m_{t−1}ᵀ ∂L/∂a⁰_t;  ∂L/∂V_l = Σ σ(a^l)ᵀ ∂L/∂a^{l+1} (the last: ∂L/∂z),
//   ∂L/∂v_l per state;  with feedback ∂L/∂W_b = Σ c_tᵀ ∂L/∂a⁰_t;
// and with feedback, a neuron's step at a time (`add_readout`), ∂L/∂w_y = Σ ∂L/∂r_t m_t and
// ∂L/∂β per state = Σ_t ∂L/∂o-through-ReLU (grad_y). (∂L/∂κ and ∂L/∂g per state: the
// reverse-time loops, `state_grads`; ∂L/∂S: `synapse_pass`.)
template <typename T>
class WeightSums {
 public:
  WeightSums(const ElmArgs& s, const ElmGrads& g, int64_t max_steps)
      : s_(s),
        g_(g),
        gu_(out<T>(g.grad_u)),
        gwb_(s.feedback ? out<T>(g.grad_w_branch) : nullptr),
        transposed_(s.n_layers),
        gw_(s.n_layers) {
    const int64_t n = s.n, d_a = s.widths[0];
    std::fill(gu_, gu_ + n * s.d_m * d_a, T(0));
    if (gwb_) std::fill(gwb_, gwb_ + n * s.d_tree * d_a, T(0));
    // Layer l's weight gradient is summed as its transpose (∂L/∂a^{l+1} broadcast, σ(a^l)
    // in the vectors) where that needs fewer vector multiply-adds: Enwik8's (40 → 20) layer
    // filled 20 of 32 lanes the other way round.
    for (int64_t l = 0; l < s.n_layers; ++l) {
      const int64_t w_in = s.widths[l], w_out = s.widths[l + 1];
      gw_[l] = out<T>(g.grad_weights[l]);
      std::fill(gw_[l], gw_[l] + n * w_in * w_out, T(0));
      if (vectors_for(w_in, kVecLanes<T>) * w_out < vectors_for(w_out, kVecLanes<T>) * w_in)
        transposed_[l].assign(n * w_in * w_out, T(0));
      T* gb = out<T>(g.grad_biases[l]);
      std::fill(gb, gb + n * s.batch * w_out, T(0));
    }
    const int64_t widest = *std::max_element(s.widths, s.widths + s.n_layers + 1);
    h_.resize(max_steps * s.batch * widest);
    if (s.feedback) {
      std::fill(out<T>(g.grad_w_y), out<T>(g.grad_w_y) + n * s.d_m, T(0));
      std::fill(out<T>(g.grad_beta), out<T>(g.grad_beta) + n * s.batch, T(0));
    }
  }

  // Neuron k's share of `steps` steps (at most max_steps): m_{t−1} (`prev`, rows d_m wide),
  // ∂L/∂a⁰ (`grad_pre`), with feedback c_t (`branches`, ldc per branch), and per layer its
  // pre-activations (`acts[l]`, σ applied here) and output's gradient (`grads_out[l]`).
  template <typename Prev>
  void add(int64_t k, int64_t steps, Prev prev, Rows<T> grad_pre, Rows<T> branches,
           int64_t ldc, const Rows<T>* acts, const Rows<T>* grads_out) {
    const int64_t batch = s_.batch, d_m = s_.d_m, d_a = s_.widths[0], d_tree = s_.d_tree;
    outer_sum(gu_ + k * d_m * d_a, d_m, d_a, steps, batch, prev, 1, grad_pre);
    if (gwb_)
      outer_sum(gwb_ + k * d_tree * d_a, d_tree, d_a, steps, batch, branches, ldc, grad_pre);
    for (int64_t l = 0; l < s_.n_layers; ++l) {
      const int64_t w_in = s_.widths[l], w_out = s_.widths[l + 1];
      // σ(a^l) of the neuron's rows first, vectorised, then the sums read it: σ inside the
      // tiles was a scalar max, multiply and broadcast per entry and column vector, half of
      // Enwik8's weight gradients at batch 64.
      for (int64_t t = 0; t < steps; ++t)
        activate(&h_[t * batch * w_in], acts[l](t, 0), batch * w_in, s_.act);
      const Rows<T> h{h_.data(), batch * w_in, w_in}, grow = grads_out[l];
      if (transposed_[l].empty())
        outer_sum(gw_[l] + k * w_in * w_out, w_in, w_out, steps, batch, h, 1, grow);
      else
        outer_sum(&transposed_[l][k * w_in * w_out], w_out, w_in, steps, batch, grow, 1, h);
      // The bias's per-state sums from the same rows, while they are in cache.
      T* __restrict gb = out<T>(g_.grad_biases[l]) + k * batch * w_out;
      for (int64_t t = 0; t < steps; ++t) {
        const T* __restrict dy = grow(t, 0);
        for (int64_t i = 0; i < batch * w_out; ++i) gb[i] += dy[i];
      }
    }
  }

  // Neuron k's step t of the readout's sums, from the stored ∂L/∂r_t, ∂L/∂y_t and m_t.
  void add_readout(int64_t k, int64_t t) {
    const int64_t batch = s_.batch, d_m = s_.d_m, first = (t * s_.n + k) * batch;
    const T* __restrict dr = in<T>(s_.grad_r) + first;
    const T* __restrict dy = in<T>(s_.grad_y) + first;
    const T* __restrict m = in<T>(s_.memories) + first * d_m;
    T* __restrict gwy = out<T>(g_.grad_w_y) + k * d_m;
    T* __restrict gbeta = out<T>(g_.grad_beta) + k * batch;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < d_m; ++i) gwy[i] += dr[b] * m[b * d_m + i];
      gbeta[b] += dy[b];
    }
  }

  // The layers' sums summed as transposes, copied back.
  void finish() {
    for (int64_t l = 0; l < s_.n_layers; ++l) {
      const int64_t w_in = s_.widths[l], w_out = s_.widths[l + 1];
      if (!transposed_[l].empty())
        for (int64_t k = 0; k < s_.n; ++k)
          transpose(gw_[l] + k * w_in * w_out, w_out, &transposed_[l][k * w_out * w_in], w_in,
                    w_out, w_in);
    }
  }

 private:
  const ElmArgs& s_;
  const ElmGrads& g_;
  T *gu_, *gwb_;
  std::vector<std::vector<T>> transposed_;
  std::vector<T*> gw_;
  std::vector<T> h_;  // σ(a^l) of one neuron's rows of the run
};


// Neuron k's ∂L/∂pre rows of step t (B rows of d_a) added to the token-table rows they were
// read from (`ElmArgs::tokens`: row tokens[t, b] · N + k).
template <typename T>
inline void add_token_rows(T* table, const int64_t* tokens, int64_t t, int64_t k, int64_t n,
                           int64_t batch, int64_t d_a, const T* grad) {
  for (int64_t b = 0; b < batch; ++b) {
    T* __restrict dst = table + (tokens[t * batch + b] * n + k) * d_a;
    const T* __restrict src = grad + b * d_a;
    for (int64_t j = 0; j < d_a; ++j) dst[j] += src[j];
  }
}

// One pass over rows [0, rows) of S (CSR crow, col, values) for `width` columns of rows
// `ld` apart (the samples of one step; or the samples and steps of a chunk, side by side),
// each row's ∂L/∂c and sums held in registers while its entries stream past:
//   c = S q rebuilt, each value summed in entry order as the forward sums it (for ∂L/∂W_b);
//   ∂L/∂S_e += Σ_columns ∂L/∂c[row_e] q[col_e], one dot product per entry;
//   where `next` is given, ∂L/∂o's scatter next[col_e] += S_e ∂L/∂c[row_e].
// Summed per column and entry, each entry at batch 1 had been a scalar multiply-add and a
// read-modify-write of ∂L/∂S_e per step (a sixth of an Enwik8 training step there); in the
// batch-inner loop, three passes over the entries. `synapse_columns` takes V vectors of
// columns, the last `tail` lanes wide.
template <typename T, int V, bool kScatter>
void synapse_columns(T* c, T* next, T* gv, const T* q, const T* dc, int64_t ld, int64_t tail,
                     const T* values, const int32_t* crow, const int32_t* col, int64_t rows) {
  constexpr int64_t L = kVecLanes<T>;
  auto load = [tail](const T* p, int v) {
    return v + 1 < V ? load_vec(p + v * L) : load_head(p + v * L, tail);
  };
  auto store = [tail](T* p, int v, Vec<T> x) {
    if (v + 1 < V)
      store_vec(p + v * L, x);
    else
      store_head(p + v * L, x, tail);
  };
  for (int64_t r = 0; r < rows; ++r) {
    Vec<T> acc[V] = {}, d[V];
    for (int v = 0; v < V; ++v) d[v] = load(dc + r * ld, v);
    for (int32_t e = crow[r]; e < crow[r + 1]; ++e) {
      const int64_t j = static_cast<int64_t>(col[e]) * ld;
      const T value = values[e];
      Vec<T> dot{};
      for (int v = 0; v < V; ++v) {
        const Vec<T> x = load(q + j, v);
        acc[v] += value * x;
        dot += d[v] * x;
        if constexpr (kScatter) store(next + j, v, load(next + j, v) + value * d[v]);
      }
      gv[e] += lane_sum<T>(dot);
    }
    for (int v = 0; v < V; ++v) store(c + r * ld, v, acc[v]);
  }
}

template <typename T>
void synapse_pass(T* c, T* next, T* gv, const T* q, const T* dc, int64_t ld, int64_t width,
                  const T* values, const int32_t* crow, const int32_t* col, int64_t rows) {
  constexpr int64_t L = kVecLanes<T>, kMaxVectors = 8;
  for (int64_t w0 = 0; w0 < width; w0 += kMaxVectors * L) {
    const int64_t part = std::min(kMaxVectors * L, width - w0), vectors = vectors_for(part, L);
    const int64_t tail = part - (vectors - 1) * L;
    T* nx = next ? next + w0 : nullptr;
    switch (vectors) {
#define ELM_SYNAPSE_CASE(V)                                                               \
  case V:                                                                                 \
    (next ? synapse_columns<T, V, true> : synapse_columns<T, V, false>)(                  \
        c + w0, nx, gv, q + w0, dc + w0, ld, tail, values, crow, col, rows);              \
    break;
      ELM_SYNAPSE_CASE(1) ELM_SYNAPSE_CASE(2) ELM_SYNAPSE_CASE(3) ELM_SYNAPSE_CASE(4)
      ELM_SYNAPSE_CASE(5) ELM_SYNAPSE_CASE(6) ELM_SYNAPSE_CASE(7) ELM_SYNAPSE_CASE(8)
#undef ELM_SYNAPSE_CASE
    }
  }
}

// The reverse-time loop of `bank_forward`, batch-inner, with the weight gradients summed as
// it goes, each neuron's step as soon as its gradients are computed (`WeightSums`, one
// step at a time): summed afterwards from stored per-step gradients (`weight_grads`, as
// after the other loops), Enwik8's ∂L/∂a⁰ and ∂L/∂z took 2.3 GB at batch 128 (T 100), each
// page zeroed by the kernel, written, then read back. So
// ∂L/∂z and every layer's input gradient live for one step (ElmArgs::grad_z and grad_acts
// null), but ∂L/∂a⁰ where ∂L/∂pre is wanted (a token table's gradient is summed here too,
// ElmGrads::grad_table). With feedback, per neuron, one pass over its synapses
// (`synapse_pass`) with ∂L/∂c_t just computed: c_t rebuilt from q_t (padded to whole vectors
// of samples), ∂L/∂S, and ∂L/∂o_{t−1} scattered into a second (N, bp) buffer, since this
// step's neurons still read ∂L/∂o_t. Needs ElmArgs::grads.
template <typename T>
void bank_backward(const ElmArgs& s) {
  const int64_t n_steps = s.n_steps, n = s.n, batch = s.batch, d_m = s.d_m;
  const int64_t n_layers = s.n_layers, act = s.act, d_tree = s.d_tree;
  const int64_t d_a = s.widths[0], nb = n * batch;
  const int64_t widest = *std::max_element(s.widths, s.widths + n_layers + 1);
  std::vector<T> dh(batch * widest);

  const T* u_t = in<T>(s.u);
  const auto io = backward_io<T>(s);
  const auto [kappa, gain, mlp_out, grad_memories, grad_mlp_out, grad_z, carry, gk, gg] = io;
  std::vector<T> p(batch * d_m), g(batch * d_m);  // tanh z_t, as in plain_backward; ∂L/∂m_t

  const bool fb = s.feedback != 0;
  const auto [values, drop, outputs, grad_y, grad_r, grad_branches] = feedback_io<T>(s);
  const T* grad_outputs = in<T>(s.grad_outputs);
  const T* grad_highpasses = in<T>(s.grad_highpasses);
  T* carry_hp = out<T>(s.carry_highpass);
  const T keep_r = T(s.kappa_r), leak_r = T(1.0 - s.kappa_r);
  const int64_t lanes = 64 / sizeof(T), bp = (batch + lanes - 1) / lanes * lanes;
  std::vector<T> da_t(fb ? d_a * bp : 0, T(0)), dc_t(fb ? d_tree * bp : 0);
  // q_t, ∂L/∂o_t and ∂L/∂o_{t−1} (N, bp); c_t of one neuron (d_tree, bp).
  std::vector<T> q(fb ? n * bp : 0, T(0)), c(fb ? d_tree * bp : 0);
  std::vector<T> grad_o(fb ? n * bp : 0, T(0)), grad_o_prev(fb ? n * bp : 0);
  T* gv = fb ? out<T>(s.grads->grad_values) : nullptr;
  if (gv) std::fill(gv, gv + s.crow[n * d_tree], T(0));

  WeightSums<T> sums(s, *s.grads, 1);
  T* table = s.tokens ? out<T>(s.grads->grad_table) : nullptr;
  // Level l's input gradient (l = n_layers: ∂L/∂z) of one neuron's step: its row block in
  // the (T, N, B, width) tensor, or where that is null, one step's scratch.
  std::vector<T*> stored(n_layers + 1);
  std::vector<std::vector<T>> scratch(n_layers + 1);
  for (int64_t l = 0; l <= n_layers; ++l) {
    stored[l] = l < n_layers ? out<T>(s.grad_acts[l]) : grad_z;
    if (!stored[l]) scratch[l].resize(batch * (l < n_layers ? s.widths[l] : d_m));
  }
  auto level = [&](int64_t l, int64_t rows) {
    return stored[l] ? stored[l] + rows * (l < n_layers ? s.widths[l] : d_m) : scratch[l].data();
  };
  std::vector<Rows<T>> acts(n_layers), grads_out(n_layers);

  for (int64_t t = n_steps - 1; t >= 0; --t) {
    if (fb) {
      step_reads(s, t, q.data(), bp);
      std::fill(grad_o_prev.begin(), grad_o_prev.end(), T(0));
    }
    for (int64_t k = 0; k < n; ++k) {
      const int64_t rows = (t * n + k) * batch;
      const int64_t states = k * batch;
      T* cr = carry + states * d_m;
      // ∂L/∂m_t: from outside, from step t+1 (the carry) and, with feedback, through o_t.
      for (int64_t j = 0; j < batch * d_m; ++j)
        g[j] = grad_memories ? grad_memories[rows * d_m + j] + cr[j] : cr[j];
      if (fb) {
        const T* wy = in<T>(s.w_y) + k * d_m;
        for (int64_t b = 0; b < batch; ++b) {
          const int64_t state = states + b, i = t * nb + state;
          const T go = grad_outputs ? grad_outputs[i] + grad_o[k * bp + b] : grad_o[k * bp + b];
          const T dy = outputs[i] > T(0) ? go : T(0);
          grad_y[i] = dy;
          T gh = carry_hp[state] - dy;
          if (grad_highpasses) gh += grad_highpasses[i];
          const T dr = dy + leak_r * gh;
          grad_r[i] = dr;
          carry_hp[state] = keep_r * gh;
          for (int64_t j = 0; j < d_m; ++j) g[b * d_m + j] += dr * wy[j];
        }
      }
      // ∂L/∂z_t = ∂L/∂m_t ⊙ g (1 − tanh² z_t) [+ ∂L/∂z_t from outside]
      T* dz = level(n_layers, rows);
      tanh_all(p.data(), mlp_out + rows * d_m, batch * d_m);
      state_grads(s, io, t, k, g.data(), p.data());
      const T* gn = gain + states * d_m;
      for (int64_t j = 0; j < batch * d_m; ++j) {
        dz[j] = g[j] * (gn[j] * (T(1) - p[j] * p[j]));
        if (grad_mlp_out) dz[j] += grad_mlp_out[rows * d_m + j];
      }
      // Down the layers: dh = da Vᵀ, then da = dh ⊙ σ'(a) at the layer's input.
      const T* da = dz;
      for (int64_t l = n_layers - 1; l >= 0; --l) {
        const int64_t w_in = s.widths[l], w_out = s.widths[l + 1];
        std::fill(dh.begin(), dh.begin() + batch * w_in, T(0));
        add_mat_mat(dh.data(), da, in<T>(s.weights[l]) + k * w_out * w_in, batch, w_out, w_in);
        T* da_in = level(l, rows);
        const T* a = in<T>(s.acts[l]) + rows * w_in;
        times_slope(da_in, dh.data(), w_in, a, batch, w_in, act);
        da = da_in;
      }
      // ∂L/∂m_{t−1} = ∂L/∂m_t ⊙ κ + ∂L/∂a⁰ Uᵀ
      const T* kap = kappa + states * d_m;
      for (int64_t j = 0; j < batch * d_m; ++j) cr[j] = g[j] * kap[j];
      add_mat_mat(cr, da, u_t + k * d_a * d_m, batch, d_a, d_m);
      if (fb) {
        // ∂L/∂c_t = ∂L/∂a⁰ W_bᵀ, computed batch-inner (`add_mat_mat_t`), the layout of
        // `synapse_pass`.
        transpose(da_t.data(), bp, da, d_a, batch, d_a);
        std::fill(dc_t.begin(), dc_t.end(), T(0));
        add_mat_mat_t(dc_t.data(), da_t.data(), in<T>(s.w_branch) + k * d_a * d_tree, d_a,
                      d_tree, bp);
        synapse_pass(c.data(), grad_o_prev.data(), gv, q.data(), dc_t.data(), bp, bp, values,
                     s.crow + k * d_tree, s.col, d_tree);
      }
      for (int64_t l = 0; l < n_layers; ++l) {
        const int64_t w_in = s.widths[l], w_out = s.widths[l + 1];
        acts[l] = {in<T>(s.acts[l]) + rows * w_in, 0, w_in};
        grads_out[l] = {level(l + 1, rows), 0, w_out};
      }
      auto prev = [&s, t, k, d_m](int64_t, int64_t b) {
        return previous_memory<T>(s, t, k) + b * d_m;
      };
      sums.add(k, 1, prev, {da, 0, d_a}, {c.data(), 0, 1}, bp, acts.data(), grads_out.data());
      if (fb) sums.add_readout(k, t);
      if (table) add_token_rows(table, s.tokens, t, k, n, batch, d_a, da);
    }
    if (fb) {  // ∂L/∂o_{t−1} = D_t ⊙ Sᵀ ∂L/∂c_t, summed by the neurons' passes
      if (drop)
        for (int64_t k = 0; k < n; ++k)
          for (int64_t b = 0; b < batch; ++b)
            grad_o_prev[k * bp + b] *= drop[t * nb + k * batch + b];
      std::swap(grad_o, grad_o_prev);
    }
  }
  if (fb)
    for (int64_t k = 0; k < n; ++k)
      std::copy(&grad_o[k * bp], &grad_o[k * bp] + batch, out<T>(s.carry_out) + k * batch);
  sums.finish();
}

// ---- The bank's reverse-time loop at small batch: neurons across the lanes ----
//
// `bank_backward` and `plain_backward` put samples in the vector lanes (or loop over one
// neuron's rows): at batch 1–8 most lanes idle and each neuron's step is many tiny loops.
// Here, as in `bank_forward_lanes`, L consecutive neurons form one group sharing every
// vector, weights re-laid out once per call, every per-neuron stage of the step one
// full-width operation per entry, groups outer and samples inner. Each output element
// is summed in the order `bank_backward` uses (g κ, then the products over their inputs in
// order), so float64 stays within rounding of it and of the eager path.
//
// ∂L/∂o_{t−1}[s] = D_t[s] Σ_{(n, j)} S[(n, j), s] ∂L/∂c_t[n, j] reads every neuron's
// branch gradients of step t, so it runs after all groups of the step, as a sum along
// each source's row of Sᵀ (`source_sums`), never a scatter whose lanes could collide on one
// source. Skipping the sources silent at t − 1 took this sum from about half of the
// loop's time to a third (perf, Enwik8 at batch 1); lists padded over L sources at a
// time, as the forward's, could not skip them.

// One sample's ∂L/∂o_{t−1}[k] = D_t[k] Σ_e value[e] dc[index[e]] along each source k's
// row of Sᵀ (`rows`), o_prev and d that sample's o_{t−1} and D_t, `batch` apart (null:
// t = 0, no dropout). Step t − 1 reads it only where o_{t−1} > 0 (the relu's slope), so a
// source that was silent, or dropped at t, is skipped: about half of them at init. At
// t = 0 it is the gradient of the initial state, wanted whole. Out of line, so that its
// pointers stay in registers (inlined, GCC reloaded them from the stack per gather).
template <typename T>
__attribute__((noinline)) void source_sums(T* __restrict co, const T* __restrict dc,
                                           const LaneLayout& rows, const T* __restrict value,
                                           const T* o_prev, const T* d, int64_t n,
                                           int64_t batch) {
  for (int64_t k = 0; k < n; ++k) {
    const T dk = d ? d[k * batch] : T(1);
    const bool read = dk != T(0) && (!o_prev || o_prev[k * batch] > T(0));
    co[k] = read ? dk * gather_dot(dc, rows.index, value, rows.first[k], rows.first[k + 1])
                 : T(0);
  }
}

// (groups, B, width, L) → (N, B, width): the inverse of `states_to_lanes`.
template <typename T>
void states_from_lanes(T* dst, const T* src, int64_t n, int64_t batch, int64_t width) {
  constexpr int64_t L = kVecLanes<T>;
  for (int64_t k = 0; k < n; ++k)
    for (int64_t i = 0; i < batch * width; ++i)
      dst[k * batch * width + i] = src[((k / L) * batch * width + i) * L + k % L];
}

template <typename T>
void bank_backward_lanes(const ElmArgs& s) {
  using V = Vec<T>;
  constexpr int64_t L = kVecLanes<T>;
  const int64_t n_steps = s.n_steps, n = s.n, batch = s.batch, d_m = s.d_m;
  const int64_t n_layers = s.n_layers, act = s.act;
  const bool fb = s.feedback != 0;
  const int64_t d_tree = fb ? s.d_tree : 0, d_a = s.widths[0];
  const int64_t groups = (n + L - 1) / L, np = groups * L;
  const int64_t widest = *std::max_element(s.widths, s.widths + n_layers + 1);

  // The weights in the forward's lane layout (`lay_out_weights`): as the forward left them
  // (ElmArgs::lane_weights), or laid out here; the products by their transposes read them
  // along rows (`lane_dots`). Per-state coefficients and the carried gradients (groups, B,
  // width, L).
  const int64_t d_in = d_m + d_tree;
  LaneBuffer<T> own(s.lane_weights ? 0 : lane_weight_offsets<T>(s).back(), false);
  const std::vector<T*> w_at = s.lane_weights
                                   ? lane_weight_starts<T>(s, out<T>(s.lane_weights))
                                   : lay_out_weights<T>(s, own.p);
  const int64_t states = groups * batch * d_m * L;
  LaneBuffer<T> kappa(states), gain(states), carry(states);
  states_to_lanes(kappa.p, in<T>(s.kappa), n, batch, d_m);
  states_to_lanes(gain.p, in<T>(s.gain), n, batch, d_m);
  states_to_lanes(carry.p, in<T>(s.carry), n, batch, d_m);
  LaneBuffer<T> w_y(groups * d_m * L), carry_hp(groups * batch * L);
  // ∂L/∂o per sample as (B, N padded), and this step's ∂L/∂c per sample as (B, groups,
  // d_tree, L): the gathers index them by neuron and by (neuron, branch).
  LaneBuffer<T> carry_out(batch * np);
  const int64_t dc_stride = groups * d_tree * L;
  LaneBuffer<T> dc(fb ? batch * dc_stride : 0);
  std::vector<T> source_value;  // Sᵀ's rows (ElmArgs::lanes_t), one per source
  if (fb) {
    to_lanes(w_y.p, in<T>(s.w_y), n, d_m, 1, d_m, 0);
    states_to_lanes(carry_hp.p, in<T>(s.carry_highpass), n, batch, 1);
    for (int64_t k = 0; k < n; ++k)
      for (int64_t b = 0; b < batch; ++b)
        carry_out.p[b * np + k] = in<T>(s.carry_out)[k * batch + b];
    source_value = lane_values<T>(s, *s.lanes_t);
  }

  const std::vector<int32_t> step_1 = lane_steps<T>(batch);
  LaneBuffer<T> grad(d_m * L), da(widest * L), dh(widest * L), a(widest * L);
  LaneBuffer<T> z(d_m * L), m_prev(d_m * L), dz_out(d_m * L);  // this step's rows, in lanes

  const auto [kappa_in, gain_in, mlp_out, grad_memories, grad_mlp_out, grad_z, carry_in,
              grad_kappa, grad_gain] = backward_io<T>(s);
  LaneBuffer<T> sum_kappa(states), sum_gain(states);  // their per-state sums, lane layout
  const auto [values, drop, outputs, grad_y, grad_r, grad_branches] = feedback_io<T>(s);
  const T* grad_outputs = in<T>(s.grad_outputs);
  const T* grad_highpasses = in<T>(s.grad_highpasses);
  const T keep_r = T(s.kappa_r), leak_r = T(1.0 - s.kappa_r);

  for (int64_t t = n_steps - 1; t >= 0; --t) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t live = std::min(L, n - g * L);
      {  // the rows the next group reads (the first group's of step t − 1 after the last),
         // asked for while this group runs: the transposes had waited on them (perf)
        const int64_t g1 = g + 1 < groups ? g + 1 : 0, t1 = g + 1 < groups ? t : t - 1;
        if (t1 >= 0) {
          const int64_t r0 = (t1 * n + g1 * L) * batch;
          const int64_t r1 = r0 + std::min(L, n - g1 * L) * batch;
          if (grad_memories) prefetch(grad_memories + r0 * d_m, grad_memories + r1 * d_m);
          prefetch(mlp_out + r0 * d_m, mlp_out + r1 * d_m);
          const T* m1 = previous_memory<T>(s, t1, g1 * L);
          prefetch(m1, m1 + (r1 - r0) * d_m);
          prefetch<true>(grad_z + r0 * d_m, grad_z + r1 * d_m);
          for (int64_t l = 0; l < n_layers; ++l) {
            const T *a1 = in<T>(s.acts[l]), *ga1 = out<T>(s.grad_acts[l]);
            prefetch(a1 + r0 * s.widths[l], a1 + r1 * s.widths[l]);
            prefetch<true>(ga1 + r0 * s.widths[l], ga1 + r1 * s.widths[l]);
          }
        }
      }
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t rows = (t * n + g * L) * batch + b;  // row of lane 0 in (T, N, B, ·)
        const int64_t state = (g * batch + b) * L;
        T* cr = carry.p + state * d_m;
        // ∂L/∂m_t: from outside, from step t+1 (the carry) and, with feedback, through o_t.
        if (grad_memories) {
          rows_to_lanes(grad.p, grad_memories + rows * d_m, batch * d_m, d_m, live);
          for (int64_t j = 0; j < d_m; ++j)
            store_vec(grad.p + j * L, load_vec(grad.p + j * L) + load_vec(cr + j * L));
        } else {
          std::copy_n(cr, d_m * L, grad.p);
        }
        if (fb) {
          const V co = load_vec(carry_out.p + b * np + g * L);
          const V go =
              grad_outputs ? gather_lanes(grad_outputs + rows, step_1.data(), live) + co : co;
          const V o = gather_lanes(outputs + rows, step_1.data(), live);
          const V dy = o > T(0) ? go : V{};
          V gh = load_vec(carry_hp.p + state) - dy;
          if (grad_highpasses) gh += gather_lanes(grad_highpasses + rows, step_1.data(), live);
          const V dr = dy + leak_r * gh;
          scatter_lanes(grad_y + rows, step_1.data(), dy, live);
          scatter_lanes(grad_r + rows, step_1.data(), dr, live);
          store_vec(carry_hp.p + state, keep_r * gh);
          for (int64_t j = 0; j < d_m; ++j)
            store_vec(grad.p + j * L,
                      load_vec(grad.p + j * L) + dr * load_vec(w_y.p + (g * d_m + j) * L));
        }
        // ∂L/∂z_t = ∂L/∂m_t ⊙ g (1 − tanh² z_t) [+ ∂L/∂z_t from outside]
        const T* gn = gain.p + state * d_m;
        rows_to_lanes(z.p, mlp_out + rows * d_m, batch * d_m, d_m, live);
        rows_to_lanes(m_prev.p, previous_memory<T>(s, t, g * L) + b * d_m, batch * d_m, d_m,
                      live);
        if (grad_mlp_out)
          rows_to_lanes(dz_out.p, grad_mlp_out + rows * d_m, batch * d_m, d_m, live);
        for (int64_t j = 0; j < d_m; ++j) {
          const V gj = load_vec(grad.p + j * L);
          const V p = tanh_lanes<T>(load_vec(z.p + j * L));
          T* sk = sum_kappa.p + state * d_m + j * L;
          T* sg = sum_gain.p + state * d_m + j * L;
          store_vec(sk, load_vec(sk) + gj * load_vec(m_prev.p + j * L));
          store_vec(sg, load_vec(sg) + gj * p);
          V dz = gj * (load_vec(gn + j * L) * (T(1) - p * p));
          if (grad_mlp_out) dz += load_vec(dz_out.p + j * L);
          store_vec(da.p + j * L, dz);
        }
        lanes_to_rows(grad_z + rows * d_m, batch * d_m, da.p, d_m, live);
        // Down the layers: dh = da Vᵀ, then da = dh ⊙ σ'(a) at the layer's input.
        for (int64_t l = n_layers - 1; l >= 0; --l) {
          const int64_t w_in = s.widths[l], w_out = s.widths[l + 1];
          std::fill(dh.p, dh.p + w_in * L, T(0));
          lane_dots<T>(dh.p, da.p, w_at[l + 1] + g * w_in * w_out * L, w_in, w_out);
          rows_to_lanes(a.p, in<T>(s.acts[l]) + rows * w_in, batch * w_in, w_in, live);
          times_slope(da.p, dh.p, w_in * L, a.p, 1, w_in * L, act);
          lanes_to_rows(out<T>(s.grad_acts[l]) + rows * w_in, batch * w_in, da.p, w_in, live);
        }
        // ∂L/∂m_{t−1} = ∂L/∂m_t ⊙ κ + ∂L/∂a⁰ Uᵀ
        const T* kap = kappa.p + state * d_m;
        for (int64_t j = 0; j < d_m; ++j)
          store_vec(cr + j * L, load_vec(grad.p + j * L) * load_vec(kap + j * L));
        const T* w1 = w_at[0] + g * d_in * d_a * L;  // U's rows, then W_b's
        lane_dots<T>(cr, da.p, w1, d_m, d_a);
        if (fb) {
          // ∂L/∂c_t = ∂L/∂a⁰ W_bᵀ, for the gather and the store below.
          T* dcb = dc.p + b * dc_stride + g * d_tree * L;
          std::fill(dcb, dcb + d_tree * L, T(0));
          lane_dots<T>(dcb, da.p, w1 + d_m * d_a * L, d_tree, d_a);
        }
      }
    }
    if (fb) {
      // ∂L/∂c_t stored (T, N, d_tree, B) once per step, in the order it is written: a
      // scatter per (group, sample, branch) cost a quarter of the loop at batch 8 (each
      // touching L cache lines).
      T* dst = grad_branches + t * n * d_tree * batch;
      if (batch == 1)  // a neuron's branches are contiguous: a group is one block transpose
        for (int64_t g = 0; g < groups; ++g)
          lanes_to_rows(dst + g * L * d_tree, d_tree, dc.p + g * d_tree * L, d_tree,
                        std::min(L, n - g * L));
      for (int64_t k = 0; k < n && batch > 1; ++k) {
        const T* src = dc.p + (k / L) * d_tree * L + k % L;
        for (int64_t j = 0; j < d_tree; ++j)
          for (int64_t b = 0; b < batch; ++b)
            dst[(k * d_tree + j) * batch + b] = src[b * dc_stride + j * L];
      }
    }
    if (fb)  // ∂L/∂o_{t−1} = D_t ⊙ Sᵀ ∂L/∂c_t, a gather-dot along each source's row of Sᵀ
      for (int64_t b = 0; b < batch; ++b)
        source_sums(carry_out.p + b * np, dc.p + b * dc_stride, *s.lanes_t, source_value.data(),
                    t > 0 ? outputs + (t - 1) * n * batch + b : nullptr,
                    drop ? drop + t * n * batch + b : nullptr, n, batch);
  }
  states_from_lanes(carry_in, carry.p, n, batch, d_m);
  states_from_lanes(grad_kappa, sum_kappa.p, n, batch, d_m);
  states_from_lanes(grad_gain, sum_gain.p, n, batch, d_m);
  if (fb) {
    states_from_lanes(out<T>(s.carry_highpass), carry_hp.p, n, batch, 1);
    for (int64_t k = 0; k < n; ++k)
      for (int64_t b = 0; b < batch; ++b)
        out<T>(s.carry_out)[k * batch + b] = carry_out.p[b * np + k];
  }
}

// Which reverse-time loop runs. The lanes loop's cost grows with the batch (one sample at
// a time); the batch-inner one's stays nearly flat up to a vector of samples, and it sums
// the weight gradients as it goes (`bank_backward`), where after the lanes loop
// `weight_grads` reads them back. Measured per CPU-s of a whole training step (float32,
// 1 thread, shared 2-core machine, two alternations; lanes vs batch-inner): SHD-Adding
// (N 96, T 1000) batch 2: 32–35k vs 23k, 4: 30–31k vs 32–33k, 8: 32–33k vs 38k; the small
// sweep bank (N 24, T 200) batch 4: 69–77k vs 69–71k, 8: 73–87k vs 89–90k; Enwik8 (N 742,
// T 100) batch 2: 528–569 vs 487–492, 4: 753–755 vs 797–853. Once `weight_grads` rebuilt
// c_t and summed ∂L/∂S along a chunk's steps side by side and the lanes loops moved
// rows by transposes, again (an AMD EPYC machine, two alternations): Enwik8 batch 4:
// 642–644 vs 545–573, 8: 775–861 vs 874–881; SHD-Adding batch 8: 27–41k vs 40–51k, 16:
// 33k vs 42–44k; small batch 8: 114–122k vs 136–164k. So with feedback up to batch 4 at
// every N. (The loops alone, before the batch-inner loop summed the weight gradients, had
// put the limit at 8.) Without feedback (the network's readout: N
// 19, d_m 3, a linear MLP) the lanes loop beat `plain_backward` at every batch measured,
// 1 to 64 (0.2 vs 0.6 µs at 1, 11.7 vs 14.2 at 64, float32), but only once a group's lanes
// are at least half full; a lone neuron (the NeuronIO neuron, N = 1) keeps `plain_backward`.
constexpr int64_t kLanesBackwardMaxBatch = 4;
constexpr int64_t kLanesPlainMaxBatch = 64;

template <typename T>
inline bool backward_on_lanes(const ElmArgs& s) {
  if (!s.feedback) return s.n >= kVecLanes<T> / 2 && s.batch <= kLanesPlainMaxBatch;
  return s.batch <= kLanesBackwardMaxBatch;
}

// How many values ElmArgs::lane_weights takes where both the forward and the reverse-time
// loop run on lanes (so that the second can read the first's), else 0.
template <typename T>
int64_t shared_lane_weights(const ElmArgs& s) {
  return forward_on_lanes<T>(s) && backward_on_lanes<T>(s) ? lane_weight_offsets<T>(s).back()
                                                           : 0;
}

template <typename T>
void backward_any(const ElmArgs& s) {
  if (backward_on_lanes<T>(s))
    bank_backward_lanes<T>(s);
  else if (s.feedback)
    bank_backward<T>(s);
  else
    plain_backward<T>(s);
}

// The bank's pre-activation from its input drive: out (T, N, B, d_a) = drive (T, B, N, d_a)
// with the B and N axes swapped, plus bias (N, d_a). Row (t, b) of the drive starts at t ·
// st + b · sb (its N · d_a values contiguous): time-major, or the product of batch-first
// input taken in its own order (`ELMBank.input_drive`). One pass over contiguous d_a-wide
// rows; ATen's general permuted copy of the same (inner extent d_a ≈ 10) runs several
// times slower.
template <typename T>
void bank_pre(int64_t steps, int64_t batch, int64_t n, int64_t d_a, int64_t st, int64_t sb,
              const T* drive, const T* bias, T* out) {
  for (int64_t t = 0; t < steps; ++t)
    for (int64_t k = 0; k < n; ++k) {
      const T* __restrict bk = bias + k * d_a;
      for (int64_t b = 0; b < batch; ++b) {
        const T* __restrict src = drive + t * st + b * sb + k * d_a;
        T* __restrict dst = out + ((t * n + k) * batch + b) * d_a;
        for (int64_t j = 0; j < d_a; ++j) dst[j] = src[j] + bk[j];
      }
    }
}

// Its gradient: grad_drive (T, B, N, d_a; rows st and sb apart as the drive's) = grad (T, N,
// B, d_a) swapped back, grad_bias (N, d_a) = its sum over T and B (either may be null: not
// wanted).
template <typename T>
void bank_pre_grad(int64_t steps, int64_t batch, int64_t n, int64_t d_a, int64_t st,
                   int64_t sb, const T* grad, T* grad_drive, T* grad_bias) {
  if (grad_bias) std::fill(grad_bias, grad_bias + n * d_a, T(0));
  for (int64_t t = 0; t < steps; ++t)
    for (int64_t k = 0; k < n; ++k) {
      T* __restrict gb = grad_bias ? grad_bias + k * d_a : nullptr;
      for (int64_t b = 0; b < batch; ++b) {
        const T* __restrict src = grad + ((t * n + k) * batch + b) * d_a;
        if (grad_drive) copy(grad_drive + t * st + b * sb + k * d_a, src, d_a);
        if (gb)
          for (int64_t j = 0; j < d_a; ++j) gb[j] += src[j];
      }
    }
}

// The gradient of a token table read in place (`ElmArgs::tokens`): pre row (t, k, b) was
// table row tokens[t, b] · N + k, so grad_table (rows · N, d_a) = Σ of grad (T, N, B, d_a)
// over the rows that read it, in (t, k, b) order. One pass; the (T, N, B, d_a) row gather
// it replaces had a sort of all T · N · B indices in its backward pass.
template <typename T>
void token_grad(int64_t steps, int64_t n, int64_t batch, int64_t d_a, int64_t table_rows,
                const int64_t* tokens, const T* grad, T* grad_table) {
  std::fill(grad_table, grad_table + table_rows * d_a, T(0));
  for (int64_t t = 0; t < steps; ++t)
    for (int64_t k = 0; k < n; ++k)
      add_token_rows(grad_table, tokens, t, k, n, batch, d_a, grad + (t * n + k) * batch * d_a);
}

// The feed-forward slots of a bank, for `ff_matrix` and `ff_matrix_grad`: slot k (sorted
// by target = channel · n + neuron, start[c] the first slot of channel c) adds
// (scale · w_s[slot_k]) · W_first[row_k] to matrix row target_k, row_k = neuron · d_tree +
// branch naming a row of the first layer's branch half (W_first is (N, fan_in, d_a), the
// branch rows first). For each listed channel u (channels[u] for u < n_channels; all
// channels in order when null), calls rows(r0), r0 = u · n its first row in the matrix of
// the listed channels only, then visit(k, r, offset) for each of its slots, r the slot's
// row there, offset its W_first row.
//
// Going 32 neurons at a time over all channels, so that a block's W_first rows stay in L2,
// did not pay: at Enwik8's batch 1 the hidden bank's build and gradient took the same time
// (their passes over the table and the weights wait on memory, not on the order), the
// readout's (d_a 3, its W_first in L2 anyway) 1.4× and 1.6× longer.
template <typename R, typename F>
void for_each_ff_slot(int64_t n_channels, int64_t n, int64_t d_a, int64_t d_tree,
                      int64_t fan_in, const int64_t* channels, const int64_t* start,
                      const int64_t* row, const int64_t* target, R&& rows, F&& visit) {
  for (int64_t u = 0; u < n_channels; ++u) {
    const int64_t c = channels ? channels[u] : u, shift = (u - c) * n;
    rows(u * n);
    for (int64_t k = start[c]; k < start[c + 1]; ++k)
      visit(k, target[k] + shift, ((row[k] / d_tree) * fan_in + row[k] % d_tree) * d_a);
  }
}

// The composed input matrix of a bank (elmnet.network.ELMBank.feedforward_matrix), its
// rows for the listed channels only (`for_each_ff_slot`): (n_channels · n, d_a). Each row
// is summed in slot order, as ATen's index_add sums it. One pass where the autograd graph
// of the same made a dozen ops each way (a tenth of a small network's training step). With
// `bias` (n, d_a) each row starts from bias[row % n] (a token table's bias per neuron)
// instead of zero. A token table in training lists only the tokens of the call: at
// Enwik8's batch 1 the whole 24 MB table had been a fifth of a short call.
template <typename T>
void ff_matrix(int64_t n_channels, int64_t n, int64_t d_a, int64_t d_tree, int64_t fan_in,
               const int64_t* channels, const int64_t* start, const int64_t* slot,
               const int64_t* row, const int64_t* target, const T* w_s, const T* w_first,
               T scale, const T* bias, T* matrix) {
  for_each_ff_slot(
      n_channels, n, d_a, d_tree, fan_in, channels, start, row, target,
      [&](int64_t r0) {  // a channel's rows start from the bias (or zero) just before its slots
        T* dst = matrix + r0 * d_a;
        if (bias)
          std::copy_n(bias, n * d_a, dst);
        else
          std::fill(dst, dst + n * d_a, T(0));
      },
      [&](int64_t k, int64_t r, int64_t offset) {
        const T w = scale * w_s[slot[k]];
        const T* __restrict src = w_first + offset;
        T* __restrict dst = matrix + r * d_a;
        for (int64_t j = 0; j < d_a; ++j) dst[j] += w * src[j];
      });
}

// Its gradient from G = ∂L/∂matrix (the listed channels' rows): ∂L/∂w_s[slot_k] = scale ·
// G[r_k] · W_first[row_k] and ∂L/∂W_first[row_k] += (scale · w_s[slot_k]) · G[r_k], into
// grad_w_s (n_weights, zero at the slots not listed: the recurrent ones and the channels
// left out) and grad_w_first (n_first, zero in the memory half); and a token table's bias,
// ∂L/∂bias[k] = Σ_u G[u · n + k] (n, d_a), summed in channel order as the slots read G (an
// ATen sum had read the table once more). Any of the three may be null (not wanted). A
// slot whose row of G is all zeros adds nothing and is skipped: a token table's gradient
// has rows only for the tokens that occurred.
template <typename T>
void ff_matrix_grad(int64_t n_channels, int64_t n, int64_t d_a, int64_t d_tree,
                    int64_t fan_in, int64_t n_weights, int64_t n_first, const int64_t* channels,
                    const int64_t* start, const int64_t* slot, const int64_t* row,
                    const int64_t* target, const T* w_s, const T* w_first, T scale, const T* g,
                    T* grad_w_s, T* grad_w_first, T* grad_bias) {
  if (grad_w_s) std::fill(grad_w_s, grad_w_s + n_weights, T(0));
  if (grad_w_first) std::fill(grad_w_first, grad_w_first + n_first, T(0));
  if (grad_bias) std::fill(grad_bias, grad_bias + n * d_a, T(0));
  for_each_ff_slot(
      n_channels, n, d_a, d_tree, fan_in, channels, start, row, target,
      [&](int64_t r0) {  // the bias's sum reads the channel's rows just before its slots do
        if (!grad_bias) return;
        const T* __restrict gr = g + r0 * d_a;
        for (int64_t j = 0; j < n * d_a; ++j) grad_bias[j] += gr[j];
      },
      [&](int64_t k, int64_t r, int64_t offset) {
        const T* __restrict gk = g + r * d_a;
        if (std::all_of(gk, gk + d_a, [](T v) { return v == T(0); })) return;
        if (grad_w_s) {  // a dot product in vector lanes: a scalar chain of d_a dependent adds
          constexpr int64_t L = kVecLanes<T>;  // had been 5 % of an Enwik8 step at batch 1
          const T* __restrict src = w_first + offset;
          Vec<T> dot{};
          for (int64_t j = 0; j < d_a; j += L) {
            const int64_t count = std::min(L, d_a - j);
            dot += load_head(gk + j, count) * load_head(src + j, count);
          }
          grad_w_s[slot[k]] = scale * lane_sum<T>(dot);
        }
        if (grad_w_first) {
          const T w = scale * w_s[slot[k]];
          T* __restrict dst = grad_w_first + offset;
          for (int64_t j = 0; j < d_a; ++j) dst[j] += w * gk[j];
        }
      });
}

// The recurrent synapse matrix's entries from the synapse weights
// (elmnet.network.ELMBank._recurrent_values): values[entry_k] = Σ scale · w_s[slot_k] over
// the recurrent slots k, in slot order (as ATen's index_add sums them); and back, with
// ∂L/∂values `g`: ∂L/∂w_s[slot_k] = scale · g[entry_k] (each slot is listed once), zero at
// the feed-forward slots. One pass each way where the ATen gather, product and indexed sum
// (and their backward passes) took about 2 ms of an Enwik8 training call.
template <typename T>
void recurrent_values(int64_t n_slots, int64_t nnz, const int64_t* slot, const int64_t* entry,
                      const T* w_s, T scale, T* values) {
  std::fill(values, values + nnz, T(0));
  for (int64_t k = 0; k < n_slots; ++k) values[entry[k]] += scale * w_s[slot[k]];
}

template <typename T>
void recurrent_values_grad(int64_t n_slots, int64_t n_weights, const int64_t* slot,
                           const int64_t* entry, const T* g, T scale, T* grad_w_s) {
  std::fill(grad_w_s, grad_w_s + n_weights, T(0));
  for (int64_t k = 0; k < n_slots; ++k) grad_w_s[slot[k]] = scale * g[entry[k]];
}

// The weight gradients of the recurrence after a reverse-time loop, from the per-step
// gradients it stored (elmnet.recurrence._weight_grads, which does the same with a score of
// ATen ops: at small batch their dispatch, not their arithmetic, was most of a small
// network's backward pass): the sums of `WeightSums`, and with feedback (q_t = D_t ⊙
// o_{t−1}, c_t = S q_t rebuilt) ∂L/∂S_e = Σ ∂L/∂c_t[row_e] q_t[col_e]. After the plain loop
// and the bank's lanes loop (batch ≤ 4): `bank_backward` sums its own.
//
// A group of neurons at a time (16, or all where a chunk's rows fit in L2), over all
// steps a chunk at a time, neuron by neuron within the chunk: the group's sums stay in
// cache from chunk to chunk, where chunk by chunk over all neurons every chunk had read and
// written all of them again (Enwik8: 10.7 MB each way per chunk, the tiles waiting on the
// loads); and a chunk's rows of the group's neurons are contiguous at each step, read in
// order first (`touch`). With feedback, a neuron's c_t and ∂L/∂S come from its rows of S
// alone (`synapse_pass`), time-inner, samples and steps side by side (column b · steps +
// t): q_t of every step is transposed that way once, chunk by chunk, and the neuron's rows
// of ∂L/∂c per chunk.
template <typename T>
void weight_grads(const ElmArgs& s, const ElmGrads& g) {
  const int64_t n_steps = s.n_steps, n = s.n, batch = s.batch, d_m = s.d_m;
  const int64_t n_layers = s.n_layers, d_a = s.widths[0], nb = n * batch;
  const T* grad_z = out<T>(s.grad_z);
  const T* grad_pre = n_layers ? in<T>(s.grad_acts[0]) : grad_z;
  // ∂L/∂ of layer l's output: the next layer's input, or z.
  auto grad_out = [&](int64_t l) { return l + 1 < n_layers ? in<T>(s.grad_acts[l + 1]) : grad_z; };
  // Row (t, k, b) of a (T, N, B, width) tensor.
  auto row = [=](int64_t t, int64_t k, int64_t b) { return (t * n + k) * batch + b; };

  const bool fb = s.feedback;
  const int64_t d_tree = fb ? s.d_tree : 0;
  const auto [values, drop, outputs, grad_y, grad_r, grad_branches] = feedback_io<T>(s);
  T* gv = fb ? out<T>(g.grad_values) : nullptr;
  if (gv) std::fill(gv, gv + s.crow[n * d_tree], T(0));
  const int64_t kChunk = fb ? std::max<int64_t>(1, 2 * kVecLanes<T> / batch) : 32;
  // A chunk's rows of all neurons that fit in L2 (about 1 MB) run as one group: there 16
  // neurons at a time had made SHD-Adding's weight sums (N 96, batch 4) 1.09× slower.
  int64_t row_values = d_m + d_a + d_tree;  // m_{t−1}, ∂L/∂a⁰, ∂L/∂c; then the layers'
  for (int64_t l = 0; l < n_layers; ++l) row_values += s.widths[l] + s.widths[l + 1];
  const bool in_l2 = n * kChunk * batch * row_values * int64_t(sizeof(T)) <= (int64_t(1) << 20);
  const int64_t kGroup = in_l2 ? n : 16;
  WeightSums<T> sums(s, g, kChunk);
  // q_t time-inner per chunk: chunk [t0, t0 + steps) at t0 · nb, (N, batch · steps).
  std::vector<T> qt(fb ? n_steps * nb : 0), q(fb ? kChunk * nb : 0);
  for (int64_t t0 = 0; t0 < n_steps && fb; t0 += kChunk) {
    const int64_t steps = std::min(kChunk, n_steps - t0);
    for (int64_t t = t0; t < t0 + steps; ++t) step_reads(s, t, q.data() + (t - t0) * nb, batch);
    transpose(qt.data() + t0 * nb, steps, q.data(), nb, steps, nb);
  }
  std::vector<T> dc(d_tree * batch * kChunk), c(d_tree * batch * kChunk);
  std::vector<Rows<T>> acts(n_layers), grads_out(n_layers);
  // The rows of neurons [k0, k1) at steps [t0, t1), read in order (`touch`).
  auto touch_rows = [&](int64_t k0, int64_t k1, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = row(t, k0, 0), r1 = row(t, k1, 0);
      touch(grad_pre + r0 * d_a, grad_pre + r1 * d_a);
      const T* m = previous_memory<T>(s, t, k0);
      touch(m, m + (r1 - r0) * d_m);
      for (int64_t l = 0; l < n_layers; ++l) {
        const T *a = in<T>(s.acts[l]), *go = grad_out(l);
        touch(a + r0 * s.widths[l], a + r1 * s.widths[l]);
        touch(go + r0 * s.widths[l + 1], go + r1 * s.widths[l + 1]);
      }
      if (fb) touch(grad_branches + r0 * d_tree, grad_branches + r1 * d_tree);
    }
  };
  for (int64_t k0 = 0; k0 < n; k0 += kGroup) {
    const int64_t k1 = std::min(n, k0 + kGroup);
    for (int64_t t0 = 0; t0 < n_steps; t0 += kChunk) {
      const int64_t steps = std::min(kChunk, n_steps - t0), w = batch * steps;
      touch_rows(k0, k1, t0, t0 + steps);
      for (int64_t k = k0; k < k1; ++k) {
        if (fb) {  // the neuron's c_t and ∂L/∂S over the chunk, rows (d_tree, batch · steps)
          transpose(dc.data(), steps, grad_branches + row(t0, k, 0) * d_tree, nb * d_tree,
                    steps, d_tree * batch);
          synapse_pass(c.data(), static_cast<T*>(nullptr), gv, qt.data() + t0 * nb,
                       dc.data(), w, w, values, s.crow + k * d_tree, s.col, d_tree);
        }
        auto prev = [&s, t0, k, d_m](int64_t t, int64_t b) {
          return previous_memory<T>(s, t0 + t, k) + b * d_m;
        };
        const int64_t first = row(t0, k, 0);
        for (int64_t l = 0; l < n_layers; ++l) {
          const int64_t w_in = s.widths[l], w_out = s.widths[l + 1];
          acts[l] = {in<T>(s.acts[l]) + first * w_in, nb * w_in, w_in};
          grads_out[l] = {grad_out(l) + first * w_out, nb * w_out, w_out};
        }
        const Rows<T> branches{fb ? c.data() : nullptr, 1, steps};  // c's row: b at b · steps
        sums.add(k, steps, prev, {grad_pre + first * d_a, nb * d_a, d_a}, branches, w,
                 acts.data(), grads_out.data());
        for (int64_t t = t0; t < t0 + steps && fb; ++t) sums.add_readout(k, t);
      }
    }
  }
  sums.finish();
}

// The leaky trace b_t = κ ⊙ b_{t−1} + u_t over (B, T, C), one sequence at a time: one
// pass over the data where the parallel scan makes ⌈log₂ T⌉ passes with copies.
template <typename T>
void trace_forward(int64_t batch, int64_t steps, int64_t channels, const T* u, const T* kappa,
                   const T* init, T* b) {
  for (int64_t s = 0; s < batch; ++s) {
    const T* us = u + s * steps * channels;
    T* bs = b + s * steps * channels;
    if (steps == 0) continue;
    for (int64_t c = 0; c < channels; ++c)
      bs[c] = init ? kappa[c] * init[s * channels + c] + us[c] : us[c];
    for (int64_t t = 1; t < steps; ++t) {
      const T* __restrict prev = bs + (t - 1) * channels;
      const T* __restrict ut = us + t * channels;
      T* __restrict bt = bs + t * channels;
      for (int64_t c = 0; c < channels; ++c) bt[c] = kappa[c] * prev[c] + ut[c];
    }
  }
}

// Its reverse-time pass. With g_t = ∂L/∂b_t from outside and G_t the total derivative,
// G_t = g_t + κ ⊙ G_{t+1}; then ∂L/∂u_t = G_t, ∂L/∂b_{−1} = κ ⊙ G_0 and
// ∂L/∂κ = Σ_{s,t} G_t ⊙ b_{t−1} (b_{−1} = init or 0), summed into grad_kappa (C,), which
// the caller zeroes. grad_init and grad_kappa may be null (not wanted).
template <typename T>
void trace_backward(int64_t batch, int64_t steps, int64_t channels, const T* grad_b,
                    const T* kappa, const T* b, const T* init, T* grad_u, T* grad_init,
                    T* grad_kappa) {
  for (int64_t s = 0; s < batch; ++s) {
    const int64_t first = s * steps * channels;
    if (steps == 0) continue;
    const T* gs = grad_b + first;
    T* gu = grad_u + first;
    const int64_t last = (steps - 1) * channels;
    for (int64_t c = 0; c < channels; ++c) gu[last + c] = gs[last + c];
    for (int64_t t = steps - 2; t >= 0; --t) {
      const T* __restrict next = gu + (t + 1) * channels;
      const T* __restrict gt = gs + t * channels;
      T* __restrict out_t = gu + t * channels;
      for (int64_t c = 0; c < channels; ++c) out_t[c] = gt[c] + kappa[c] * next[c];
    }
    if (grad_init)
      for (int64_t c = 0; c < channels; ++c) grad_init[s * channels + c] = kappa[c] * gu[c];
    if (grad_kappa) {
      const T* bs = b + first;
      for (int64_t t = 1; t < steps; ++t)
        for (int64_t c = 0; c < channels; ++c)
          grad_kappa[c] += gu[t * channels + c] * bs[(t - 1) * channels + c];
      if (init)
        for (int64_t c = 0; c < channels; ++c) grad_kappa[c] += gu[c] * init[s * channels + c];
    }
  }
}

// Bit j set where p[j] != 0 (NaN included), for the 64 / sizeof(X) values from p.
template <typename X>
inline uint64_t nonzero_mask(const X* p) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if constexpr (sizeof(X) == 1) {
    const __m512i v = _mm512_loadu_si512(p);
    return _mm512_test_epi8_mask(v, v);
  } else if constexpr (sizeof(X) == 4) {
    return _mm512_cmp_ps_mask(_mm512_loadu_ps(p), _mm512_setzero_ps(), _CMP_NEQ_UQ);
  } else {
    return _mm512_cmp_pd_mask(_mm512_loadu_pd(p), _mm512_setzero_pd(), _CMP_NEQ_UQ);
  }
#else
  uint64_t mask = 0;
  for (int j = 0; j < int(64 / sizeof(X)); ++j) mask |= uint64_t(p[j] != X(0)) << j;
  return mask;
#endif
}

// The same for the first `count` (< 64 / sizeof(X)) values only: a masked load, so the
// row's last block (62 of 1278 NeuronIO inputs) costs one compare, not a scalar loop.
template <typename X>
inline uint64_t nonzero_mask_head(const X* p, int64_t count) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if constexpr (sizeof(X) == 1) {
    const __m512i v = _mm512_maskz_loadu_epi8((__mmask64)((uint64_t(1) << count) - 1), p);
    return _mm512_test_epi8_mask(v, v);
  } else if constexpr (sizeof(X) == 4) {
    const __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << count) - 1), p);
    return _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
  } else {
    const __m512d v = _mm512_maskz_loadu_pd((__mmask8)((1u << count) - 1), p);
    return _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_NEQ_UQ);
  }
#else
  uint64_t mask = 0;
  for (int64_t j = 0; j < count; ++j) mask |= uint64_t(p[j] != X(0)) << j;
  return mask;
#endif
}

// Y = X M for a row-major X (rows × n_in) that is mostly zeros (spike input), M
// (n_in × n_out): each nonzero adds one row of M, so the cost is one read of X plus
// n_out multiply-adds per nonzero, against n_in · n_out per row for the dense product.
// X is float like M, or int8 (spike counts: a quarter of the bytes to read). It is
// scanned one 64-byte block at a time as a bit mask of its nonzeros (one vector
// compare), so the all-zero blocks, most of them at spike densities, cost one test; −0
// counts as zero (it adds nothing). Where the nonzeros are is recorded in CSR form (crow
// (rows + 1), col) for the backward pass; when there are more than `capacity`, the
// product stops and −1 is returned (the caller then takes the dense product: X was not
// sparse enough for this to pay).
// M is read in place when n_out is a whole number of 64-byte vectors (240 and 960 floats,
// the ELM Network's N · d_a). Otherwise it is copied once per call into rows padded to whole
// vectors: the per-nonzero multiply-add then runs without a scalar remainder loop (13 of
// the 45 branches of the NeuronIO neuron would otherwise go one at a time, the larger
// part of the cost).
template <typename T>
inline int64_t padded(int64_t n_out) {
  constexpr int64_t kLanes = 64 / sizeof(T);
  return (n_out + kLanes - 1) / kLanes * kLanes;
}

// Appends i + (the positions of mask's set bits) to col[0…), returning how many. With
// AVX-512 without a branch per bit (a compress of 16 indices at a time, each store
// writing 16 entries: col needs 64 + 16 entries of room): at spike densities a block holds
// 0, 1 or 2 nonzeros at random, and a loop over its bits mispredicted about once a block.
inline int64_t append_positions(int32_t* col, uint64_t mask, int64_t i, int64_t block) {
#if defined(__AVX512F__)
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t count = 0;
  for (int64_t q = 0; q < block; q += 16) {
    const __mmask16 part = static_cast<__mmask16>(mask >> q);
    const __m512i index = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int32_t>(i + q)));
    _mm512_storeu_si512(col + count, _mm512_maskz_compress_epi32(part, index));
    count += __builtin_popcount(part);
  }
  return count;
#else
  int64_t count = 0;
  for (; mask != 0; mask &= mask - 1)
    col[count++] = static_cast<int32_t>(i + __builtin_ctzll(mask));
  return count;
#endif
}

// out[:P·lanes] = Σ_e v_e · M[col_e, :P·lanes] over one row's nonzeros (M's rows ld apart),
// the sum held in registers (a memory accumulator waited on a store per nonzero).
template <typename T, int P>
inline void sum_rows(T* out, const T* m, int64_t ld, const T* vals, const int32_t* cols,
                     int64_t count) {
  using V = Vec<T>;
  constexpr int64_t L = kVecLanes<T>;
  V acc[P] = {};
  for (int64_t e = 0; e < count; ++e) {
    const T* mj = m + cols[e] * ld;
    const V v = V{} + vals[e];
    for (int p = 0; p < P; ++p) {
      V w;
      std::memcpy(&w, mj + p * L, sizeof(V));
      acc[p] += v * w;
    }
  }
  for (int p = 0; p < P; ++p) std::memcpy(out + p * L, &acc[p], sizeof(V));
}

// Wider rows go in column chunks of at most 4 vectors, each a pass over the row's nonzero
// list (kept in L1): every output element is still summed over the nonzeros in order.
template <typename T>
void sum_rows_any(T* out, const T* m, int64_t ld, int64_t vectors, const T* vals,
                  const int32_t* cols, int64_t count) {
  constexpr int64_t L = kVecLanes<T>;
  for (int64_t p = 0; p < vectors; p += 4) {
    T* o = out + p * L;
    const T* mp = m + p * L;
    switch (std::min<int64_t>(4, vectors - p)) {
      case 1: sum_rows<T, 1>(o, mp, ld, vals, cols, count); break;
      case 2: sum_rows<T, 2>(o, mp, ld, vals, cols, count); break;
      case 3: sum_rows<T, 3>(o, mp, ld, vals, cols, count); break;
      default: sum_rows<T, 4>(o, mp, ld, vals, cols, count); break;
    }
  }
}

template <typename T, typename X>
int64_t spike_product(int64_t rows, int64_t n_in, int64_t n_out, const X* x, const T* m, T* y,
                      int64_t* crow, int32_t* col, int64_t capacity) {
  constexpr int64_t kBlock = 64 / sizeof(X);
  constexpr int64_t kRoom = kBlock + 16;  // what one block's append may write
  const int64_t width = padded<T>(n_out);
  const bool in_place = width == n_out;
  std::vector<T> mp, acc;
  if (!in_place) {
    mp.assign(n_in * width, T(0));
    acc.resize(width);
    for (int64_t j = 0; j < n_in; ++j)
      std::memcpy(&mp[j * width], m + j * n_out, n_out * sizeof(T));
  }
  const T* src = in_place ? m : mp.data();
  // The row's nonzero values in M's type: gathered and converted once, not once per chunk.
  std::vector<T> vals(n_in);
  // Where col lacks the room for an unchecked append, positions go one at a time, so the
  // product stops at exactly `capacity` nonzeros as before.
  std::vector<int32_t> spare(kRoom);
  int64_t nnz = 0;
  crow[0] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const X* xr = x + r * n_in;
    const int64_t first = nnz;
    for (int64_t i = 0; i < n_in; i += kBlock) {
      const uint64_t mask = i + kBlock <= n_in ? nonzero_mask(xr + i)
                                               : nonzero_mask_head(xr + i, n_in - i);
      if (nnz + kRoom <= capacity) {
        nnz += append_positions(col + nnz, mask, i, kBlock);
      } else {
        const int64_t count = append_positions(spare.data(), mask, i, kBlock);
        if (nnz + count > capacity) return -1;
        std::copy(spare.begin(), spare.begin() + count, col + nnz);
        nnz += count;
      }
    }
    const int32_t* cols = col + first;
    const int64_t count = nnz - first;
    for (int64_t e = 0; e < count; ++e) vals[e] = static_cast<T>(xr[cols[e]]);
    T* yr = in_place ? y + r * n_out : acc.data();
    sum_rows_any(yr, src, width, width / kVecLanes<T>, vals.data(), cols, count);
    if (!in_place) std::memcpy(y + r * n_out, acc.data(), n_out * sizeof(T));
    crow[r + 1] = nnz;
  }
  return nnz;
}

// acc[col_e, :P·lanes] += v_e · G[r, :P·lanes] for every nonzero e of every row r in order,
// the row's P vectors of G loaded once into registers; the last vector holds `tail` valid
// lanes (zeros after), so G is never copied into padded rows.
template <typename T, int P>
void scatter_chunk(T* acc, int64_t ld_acc, const T* g, int64_t ld_g, int64_t tail,
                   int64_t rows, const int64_t* crow, const int32_t* col, const T* vals) {
  using V = Vec<T>;
  constexpr int64_t L = kVecLanes<T>;
  for (int64_t r = 0; r < rows; ++r) {
    if (crow[r] == crow[r + 1]) continue;
    V w[P];
    for (int p = 0; p < P - 1; ++p) std::memcpy(&w[p], g + r * ld_g + p * L, sizeof(V));
    w[P - 1] = V{};
    std::memcpy(&w[P - 1], g + r * ld_g + (P - 1) * L, tail * sizeof(T));
    for (int64_t e = crow[r]; e < crow[r + 1]; ++e) {
      T* dst = acc + col[e] * ld_acc;
      const V v = V{} + vals[e];
      for (int p = 0; p < P; ++p) {
        V a;
        std::memcpy(&a, dst + p * L, sizeof(V));
        a += v * w[p];
        std::memcpy(dst + p * L, &a, sizeof(V));
      }
    }
  }
}

template <typename T>
void scatter_any(int64_t vectors, T* acc, int64_t ld_acc, const T* g, int64_t ld_g,
                 int64_t tail, int64_t rows, const int64_t* crow, const int32_t* col,
                 const T* vals) {
  switch (vectors) {
#define ELM_SCATTER_CASE(P) \
  case P: scatter_chunk<T, P>(acc, ld_acc, g, ld_g, tail, rows, crow, col, vals); return;
    ELM_SCATTER_CASE(1) ELM_SCATTER_CASE(2) ELM_SCATTER_CASE(3) ELM_SCATTER_CASE(4)
    ELM_SCATTER_CASE(5) ELM_SCATTER_CASE(6) ELM_SCATTER_CASE(7) ELM_SCATTER_CASE(8)
#undef ELM_SCATTER_CASE
  }
}

// ∂L/∂M = Xᵀ G over the nonzeros `spike_product` recorded, into grad_m (n_in × n_out):
// each nonzero adds v · G[r] to the row of its column, rows in order. One pass per column
// chunk of ≤ 8 vectors, the row's part of G held in registers across its nonzeros; a
// pass scatters into n_in × 8 vectors of the accumulator (360 kB for 700 float inputs),
// which stays in L2 however wide M is (all of it, 2.7 MB at n_out 960, did not). The
// accumulator is grad_m itself when n_out is a whole number of vectors, else rows padded
// as in the forward pass (then copied out); G is read in place either way.
template <typename T, typename X>
void spike_product_grad(int64_t rows, int64_t n_in, int64_t n_out, const X* x,
                        const int64_t* crow, const int32_t* col, const T* g, T* grad_m) {
  constexpr int64_t L = kVecLanes<T>;
  const int64_t width = padded<T>(n_out);
  const bool in_place = width == n_out;
  std::vector<T> gp;
  if (in_place) {
    std::fill(grad_m, grad_m + n_in * n_out, T(0));
  } else {
    gp.assign(n_in * width, T(0));
  }
  T* const acc = in_place ? grad_m : gp.data();
  // The nonzeros' values in M's type, read once rather than once per chunk.
  const int64_t nnz = crow[rows];
  std::vector<T> vals(nnz);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t e = crow[r]; e < crow[r + 1]; ++e)
      vals[e] = static_cast<T>(x[r * n_in + col[e]]);
  for (int64_t c = 0; c < width; c += 8 * L) {
    const int64_t vectors = std::min<int64_t>(8, (width - c) / L);
    const int64_t tail = std::min<int64_t>(L, n_out - (c + (vectors - 1) * L));
    scatter_any(vectors, acc + c, width, g + c, n_out, tail, rows, crow, col, vals.data());
  }
  if (!in_place)
    for (int64_t j = 0; j < n_in; ++j)
      std::memcpy(grad_m + j * n_out, &gp[j * width], n_out * sizeof(T));
}

}  // namespace

extern "C" {
// The layout check: cpp_loop compares this with ctypes.sizeof of its mirror.
int64_t elm_args_size() { return sizeof(ElmArgs); }
// `build_lane_layout` for float32 (16 lanes) and float64 (8): sizes only when `first` is null.
int64_t elm_lane_layout_f32(int64_t n, int64_t width, const int32_t* crow, const int32_t* index,
                            int64_t* first, int32_t* lane_index, uint32_t* masks,
                            int32_t* pos) {
  return build_lane_layout<float>(n, width, crow, index, first, lane_index, masks, pos);
}
int64_t elm_lane_layout_f64(int64_t n, int64_t width, const int32_t* crow, const int32_t* index,
                            int64_t* first, int32_t* lane_index, uint32_t* masks,
                            int32_t* pos) {
  return build_lane_layout<double>(n, width, crow, index, first, lane_index, masks, pos);
}
// Without feedback (a neuron, or a bank without recurrent synapses) `plain_forward_any`
// and `plain_backward`; with feedback the bank loops.
void elm_forward_f32(const ElmArgs* s) {
  s->feedback ? bank_forward_any<float>(*s) : plain_forward_any<float>(*s);
}
void elm_forward_f64(const ElmArgs* s) {
  s->feedback ? bank_forward_any<double>(*s) : plain_forward_any<double>(*s);
}
void elm_backward_f32(const ElmArgs* s) { backward_any<float>(*s); }
void elm_backward_f64(const ElmArgs* s) { backward_any<double>(*s); }
void elm_bank_forward_f32(const ElmArgs* s) { bank_forward_any<float>(*s); }
void elm_bank_forward_f64(const ElmArgs* s) { bank_forward_any<double>(*s); }
// Each of the two forward loops with feedback regardless of batch, for tests and timings
// (the lanes loop only without acts).
void elm_bank_forward_lanes_f32(const ElmArgs* s) { bank_forward_lanes<float>(*s); }
void elm_bank_forward_lanes_f64(const ElmArgs* s) { bank_forward_lanes<double>(*s); }
void elm_bank_forward_batch_inner_f32(const ElmArgs* s) { bank_forward<float>(*s); }
void elm_bank_forward_batch_inner_f64(const ElmArgs* s) { bank_forward<double>(*s); }
void elm_bank_backward_f32(const ElmArgs* s) { backward_any<float>(*s); }
void elm_bank_backward_f64(const ElmArgs* s) { backward_any<double>(*s); }
// Each reverse-time loop regardless of batch and N, for tests and timings.
void elm_bank_backward_lanes_f32(const ElmArgs* s) { bank_backward_lanes<float>(*s); }
void elm_bank_backward_lanes_f64(const ElmArgs* s) { bank_backward_lanes<double>(*s); }
void elm_bank_backward_batch_inner_f32(const ElmArgs* s) {
  s->feedback ? bank_backward<float>(*s) : plain_backward<float>(*s);
}
void elm_bank_backward_batch_inner_f64(const ElmArgs* s) {
  s->feedback ? bank_backward<double>(*s) : plain_backward<double>(*s);
}

// Whether the dispatching reverse-time loops take the lanes loop for these sizes.
int64_t elm_backward_on_lanes_f32(const ElmArgs* s) { return backward_on_lanes<float>(*s); }
int64_t elm_backward_on_lanes_f64(const ElmArgs* s) { return backward_on_lanes<double>(*s); }
// How many values ElmArgs::lane_weights takes for these sizes (0: none is handed over).
int64_t elm_lane_weights_f32(const ElmArgs* s) { return shared_lane_weights<float>(*s); }
int64_t elm_lane_weights_f64(const ElmArgs* s) { return shared_lane_weights<double>(*s); }
void elm_weight_grads_f32(const ElmArgs* s, const ElmGrads* g) { weight_grads<float>(*s, *g); }
void elm_weight_grads_f64(const ElmArgs* s, const ElmGrads* g) { weight_grads<double>(*s, *g); }

// The float32 tanh of the recurrence (both loops), exposed for its accuracy test.
void elm_tanh_f32(int64_t n, const float* x, float* y) { tanh_all<float>(y, x, n); }

#define ELM_TRACE(T, SUFFIX)                                                                 \
  void elm_trace_forward_##SUFFIX(int64_t batch, int64_t steps, int64_t channels,           \
                                  const T* u, const T* kappa, const T* init, T* b) {         \
    trace_forward<T>(batch, steps, channels, u, kappa, init, b);                             \
  }                                                                                          \
  void elm_trace_backward_##SUFFIX(int64_t batch, int64_t steps, int64_t channels,          \
                                   const T* grad_b, const T* kappa, const T* b,              \
                                   const T* init, T* grad_u, T* grad_init, T* grad_kappa) {  \
    trace_backward<T>(batch, steps, channels, grad_b, kappa, b, init, grad_u, grad_init,     \
                      grad_kappa);                                                           \
  }
#define ELM_BANK_PRE(T, SUFFIX)                                                              \
  void elm_bank_pre_##SUFFIX(int64_t steps, int64_t batch, int64_t n, int64_t d_a,          \
                             int64_t st, int64_t sb, const T* drive, const T* bias, T* out) { \
    bank_pre<T>(steps, batch, n, d_a, st, sb, drive, bias, out);                             \
  }                                                                                          \
  void elm_bank_pre_grad_##SUFFIX(int64_t steps, int64_t batch, int64_t n, int64_t d_a,     \
                                  int64_t st, int64_t sb, const T* grad, T* grad_drive,      \
                                  T* grad_bias) {                                            \
    bank_pre_grad<T>(steps, batch, n, d_a, st, sb, grad, grad_drive, grad_bias);             \
  }
ELM_BANK_PRE(float, f32)
ELM_BANK_PRE(double, f64)
#undef ELM_BANK_PRE
#define ELM_TOKEN_GRAD(T, SUFFIX)                                                            \
  void elm_token_grad_##SUFFIX(int64_t steps, int64_t n, int64_t batch, int64_t d_a,        \
                               int64_t table_rows, const int64_t* tokens, const T* grad,     \
                               T* grad_table) {                                              \
    token_grad<T>(steps, n, batch, d_a, table_rows, tokens, grad, grad_table);               \
  }
ELM_TOKEN_GRAD(float, f32)
ELM_TOKEN_GRAD(double, f64)
#undef ELM_TOKEN_GRAD
#define ELM_RECURRENT_VALUES(T, SUFFIX)                                                       \
  void elm_recurrent_values_##SUFFIX(int64_t n_slots, int64_t nnz, const int64_t* slot,       \
                                     const int64_t* entry, const T* w_s, double scale,        \
                                     T* values) {                                             \
    recurrent_values<T>(n_slots, nnz, slot, entry, w_s, T(scale), values);                   \
  }                                                                                          \
  void elm_recurrent_values_grad_##SUFFIX(int64_t n_slots, int64_t n_weights,                \
                                          const int64_t* slot, const int64_t* entry,         \
                                          const T* g, double scale, T* grad_w_s) {           \
    recurrent_values_grad<T>(n_slots, n_weights, slot, entry, g, T(scale), grad_w_s);        \
  }
ELM_RECURRENT_VALUES(float, f32)
ELM_RECURRENT_VALUES(double, f64)
#undef ELM_RECURRENT_VALUES
#define ELM_FF_MATRIX(T, SUFFIX)                                                             \
  void elm_ff_matrix_##SUFFIX(int64_t n_channels, int64_t n, int64_t d_a, int64_t d_tree,   \
                              int64_t fan_in, const int64_t* channels, const int64_t* start, \
                              const int64_t* slot, const int64_t* row, const int64_t* target, \
                              const T* w_s, const T* w_first, double scale, const T* bias,   \
                              T* matrix) {                                                   \
    ff_matrix<T>(n_channels, n, d_a, d_tree, fan_in, channels, start, slot, row, target, w_s, \
                 w_first, T(scale), bias, matrix);                                           \
  }                                                                                          \
  void elm_ff_matrix_grad_##SUFFIX(int64_t n_channels, int64_t n, int64_t d_a,              \
                                   int64_t d_tree, int64_t fan_in, int64_t n_weights,        \
                                   int64_t n_first, const int64_t* channels,                 \
                                   const int64_t* start, const int64_t* slot,                \
                                   const int64_t* row, const int64_t* target, const T* w_s,  \
                                   const T* w_first, double scale, const T* g, T* grad_w_s,  \
                                   T* grad_w_first, T* grad_bias) {                          \
    ff_matrix_grad<T>(n_channels, n, d_a, d_tree, fan_in, n_weights, n_first, channels,     \
                      start, slot, row, target, w_s, w_first, T(scale), g, grad_w_s,         \
                      grad_w_first, grad_bias);                                              \
  }
ELM_FF_MATRIX(float, f32)
ELM_FF_MATRIX(double, f64)
#undef ELM_FF_MATRIX
// SUFFIX names M's type, then X's where it differs (i8: int8 input).
#define ELM_SPIKES(T, X, SUFFIX)                                                             \
  int64_t elm_spike_product_##SUFFIX(int64_t rows, int64_t n_in, int64_t n_out, const X* x, \
                                     const T* m, T* y, int64_t* crow, int32_t* col,          \
                                     int64_t capacity) {                                     \
    return spike_product<T, X>(rows, n_in, n_out, x, m, y, crow, col, capacity);             \
  }                                                                                          \
  void elm_spike_product_grad_##SUFFIX(int64_t rows, int64_t n_in, int64_t n_out,           \
                                       const X* x, const int64_t* crow, const int32_t* col,  \
                                       const T* g, T* grad_m) {                              \
    spike_product_grad<T, X>(rows, n_in, n_out, x, crow, col, g, grad_m);                    \
  }
ELM_TRACE(float, f32)
ELM_TRACE(double, f64)
ELM_SPIKES(float, float, f32)
ELM_SPIKES(double, double, f64)
ELM_SPIKES(float, int8_t, f32_i8)
ELM_SPIKES(double, int8_t, f64_i8)
#undef ELM_TRACE
#undef ELM_SPIKES
}
