// Fake quantization, quantization, dequantization and the two clipped backwards: argument
// validation, parameter tables, the strided walk, threading and the single dispatch per chunk.
// The per-element arithmetic lives in fake_quant-inl.h (docs/numerics.md describes it).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/fake_quant.cc"
#include <hwy/cache_control.h>
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "internal/parallel.h"
#include "internal/strided_walk.h"
#include "ops/fake_quant-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkit {
namespace HWY_NAMESPACE {

using internal::FqCall;
using internal::FqRunArgs;
using internal::FqTables;
using internal::Run;

namespace {

FqRunArgs ArgsFor(const FqCall& c, const FqTables& t, int param_step) {
  FqRunArgs a;
  a.t = t;
  a.param_step = param_step;
  a.qmin = c.qmin;
  a.qmax = c.qmax;
  a.zp_before_round = c.zp_before_round;
  a.nan_to_qmin = c.nan_to_qmin;
  return a;
}

// Arguments of the periodic fast path for the chunk [begin, end) (see FqCall::tile).
FqRunArgs PeriodicArgs(const FqCall& c, int64_t begin) {
  FqRunArgs a = ArgsFor(c, c.pt, 1);
  a.tile = static_cast<size_t>(c.tile);
  a.phase = static_cast<size_t>(begin % c.tile);
  return a;
}

}  // namespace

void FakeQuantizeChunk(const FqCall& c, int64_t begin, int64_t end) {
  bool streamed = false;
  if (c.tile > 0) {
    const float* x = reinterpret_cast<const float*>(c.base[0]);
    float* out = reinterpret_cast<float*>(c.base[1]);
    FqRunArgs a = PeriodicArgs(c, begin);
    a.stream = c.stream;
    streamed = FakeQuantizeRun(c.rounding, c.scale_mode, a, x + begin, out + begin,
                               static_cast<size_t>(end - begin), c.mask_out, begin);
  } else {
    internal::ForEachF32Block(
        *c.walk, 1, begin, end,
        [&](const float* const* in, float* const* out, const Run& r) HWY_ATTR {
          FqRunArgs a = ArgsFor(c, c.t.Offset(r.param_index), r.param_step);
          // Never stream into a gather/scatter block, only into the tensor itself.
          a.stream = c.stream && out[0] == reinterpret_cast<float*>(r.ptr[1]);
          streamed |= FakeQuantizeRun(c.rounding, c.scale_mode, a, in[0], out[0],
                                      static_cast<size_t>(r.count), c.mask_out, r.logical_start);
        });
  }
  // Non-temporal stores are weakly ordered: fence before the chunk counts as done.
  if (streamed) hwy::FlushStream();
}

// Stores n integral, in-range float codes as T at p (stride in elements).
template <class T>
void StoreCodes(const float* codes, int64_t n, char* p, int64_t stride) {
  T* q = reinterpret_cast<T*>(p);
  if (stride == 1) {
    for (int64_t i = 0; i < n; ++i) q[i] = static_cast<T>(codes[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) q[i * stride] = static_cast<T>(codes[i]);
  }
}

// Like ForEachF32Block for the input, but the integer output is written straight from a block
// of float codes with the dtype switch hoisted out of the element loop.
bool QuantizeChunk(const FqCall& c, int64_t begin, int64_t end) {
  bool saw_nan = false;
  const DType xt = c.walk->dtype(0), qt = c.walk->dtype(1);
  const int64_t xs = static_cast<int64_t>(DTypeSize(xt));
  const int64_t qs = static_cast<int64_t>(DTypeSize(qt));
  HWY_ALIGN float xbuf[internal::kBlock];
  HWY_ALIGN float codes[internal::kBlock];
  c.walk->ForEachRun(begin, end, [&](const Run& r) HWY_ATTR {
    for (int64_t done = 0; done < r.count; done += internal::kBlock) {
      const int64_t n = std::min(internal::kBlock, r.count - done);
      const char* xp = r.ptr[0] + done * r.stride[0] * xs;
      const float* x = reinterpret_cast<const float*>(xp);
      if (xt != DType::kFloat32 || (r.stride[0] != 1 && n > 1)) {
        for (int64_t i = 0; i < n; ++i) {
          xbuf[i] = internal::LoadAsF32(xp + i * r.stride[0] * xs, xt);
        }
        x = xbuf;
      }
      const FqRunArgs a =
          ArgsFor(c, c.t.Offset(r.param_index + (r.param_step ? done : 0)), r.param_step);
      const bool nan = QuantizeRun(c.rounding, c.scale_mode, a, x, codes, static_cast<size_t>(n));
      saw_nan |= nan;
      if (nan && qt == DType::kFloat32 && !c.nan_to_qmin) {
        // Float codes keep NaN (kPropagate; kError throws afterwards anyway).
        for (int64_t i = 0; i < n; ++i) {
          if (std::isnan(x[i])) codes[i] = x[i];
        }
      }
      char* qp = r.ptr[1] + done * r.stride[1] * qs;
      switch (qt) {
        case DType::kFloat32:
          StoreCodes<float>(codes, n, qp, r.stride[1]);
          break;
        case DType::kInt8:
          StoreCodes<int8_t>(codes, n, qp, r.stride[1]);
          break;
        case DType::kUInt8:
          StoreCodes<uint8_t>(codes, n, qp, r.stride[1]);
          break;
        case DType::kInt16:
          StoreCodes<int16_t>(codes, n, qp, r.stride[1]);
          break;
        default:
          StoreCodes<int32_t>(codes, n, qp, r.stride[1]);
          break;
      }
    }
  });
  return saw_nan;
}

void DequantizeChunk(const FqCall& c, int64_t begin, int64_t end) {
  internal::ForEachF32Block(
      *c.walk, 1, begin, end,
      [&](const float* const* in, float* const* out, const Run& r) HWY_ATTR {
        const FqRunArgs a = ArgsFor(c, c.t.Offset(r.param_index), r.param_step);
        DequantizeRun(c.scale_mode, a, in[0], out[0], static_cast<size_t>(r.count));
      });
}

void BackwardMaskedChunk(const FqCall& c, int64_t begin, int64_t end) {
  bool streamed = false;
  internal::ForEachF32Block(*c.walk, 1, begin, end,
                            [&](const float* const* in, float* const* out, const Run& r) HWY_ATTR {
                              const bool stream =
                                  c.stream && out[0] == reinterpret_cast<float*>(r.ptr[1]);
                              BackwardMaskedRun(in[0], out[0], static_cast<size_t>(r.count),
                                                c.mask_in, r.logical_start, stream);
                              streamed |= stream;
                            });
  if (streamed) hwy::FlushStream();
}

void BackwardClippedChunk(const FqCall& c, int64_t begin, int64_t end) {
  if (c.tile > 0) {
    const float* dy = reinterpret_cast<const float*>(c.base[0]);
    const float* x = reinterpret_cast<const float*>(c.base[1]);
    float* dx = reinterpret_cast<float*>(c.base[2]);
    FqRunArgs a = PeriodicArgs(c, begin);
    a.stream = c.stream;
    BackwardClippedRun(c.rounding, c.scale_mode, a, dy + begin, x + begin, dx + begin,
                       static_cast<size_t>(end - begin));
  } else {
    internal::ForEachF32Block(
        *c.walk, 2, begin, end,
        [&](const float* const* in, float* const* out, const Run& r) HWY_ATTR {
          FqRunArgs a = ArgsFor(c, c.t.Offset(r.param_index), r.param_step);
          a.stream = c.stream && out[0] == reinterpret_cast<float*>(r.ptr[2]);
          BackwardClippedRun(c.rounding, c.scale_mode, a, in[0], in[1], out[0],
                             static_cast<size_t>(r.count));
        });
  }
  if (c.stream) hwy::FlushStream();
}

// Logical index of the first NaN of operand 0 in [begin, end), or -1.
int64_t FirstNaNChunk(const FqCall& c, int64_t begin, int64_t end) {
  int64_t first = -1;
  internal::ForEachF32Block(*c.walk, 1, begin, end,
                            [&](const float* const* in, float* const*, const Run& r) HWY_ATTR {
                              if (first >= 0) return;
                              const int64_t i = FirstNaNRun(in[0], static_cast<size_t>(r.count));
                              if (i >= 0) first = r.logical_start + i;
                            });
  return first;
}

}  // namespace HWY_NAMESPACE
}  // namespace qkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE

#include <hwy/aligned_allocator.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "internal/check.h"
#include "qkit/error.h"
#include "qkit/ops/fake_quant.h"

namespace qkit {

HWY_EXPORT(FakeQuantizeChunk);
HWY_EXPORT(QuantizeChunk);
HWY_EXPORT(DequantizeChunk);
HWY_EXPORT(BackwardMaskedChunk);
HWY_EXPORT(BackwardClippedChunk);
HWY_EXPORT(FirstNaNChunk);

namespace {

using internal::FqCall;
using internal::FqTables;
using internal::Walk;

constexpr const char* kFakeQuantize = "qkit::FakeQuantize";
constexpr const char* kQuantize = "qkit::Quantize";
constexpr const char* kDequantize = "qkit::Dequantize";
constexpr const char* kBackwardMasked = "qkit::FakeQuantizeBackwardMasked";
constexpr const char* kBackwardClipped = "qkit::FakeQuantizeBackwardClipped";

// Out-of-place float32 outputs at least this large are written with non-temporal stores
// (they would not stay in the caches anyway, and skipping the read-for-ownership of the
// destination lines saves a third of the memory traffic). The values written are identical.
constexpr int64_t kStreamMinBytes = int64_t{16} << 20;

// Periodic fast path (FqCall::tile): used when the strided walk's runs would be shorter than
// kShortRun elements and one period of parameters (channels x inner) has at most kMaxPeriod
// slots. The tile is about kMinTile long and a multiple of the period and, where that keeps
// it within kMaxPeriod, of 16 floats (so every tile starts 64-byte aligned in an aligned tensor
// and byte-aligned in the mask); the expanded tables (3 floats per entry) stay in L1.
constexpr int64_t kShortRun = 1024;
constexpr int64_t kMaxPeriod = 2048;
constexpr int64_t kMinTile = 1024;

// ---------------------------------------------------------------- validation helpers

void RequireFloating(const TensorView& v, const char* fn, const char* arg) {
  QKIT_REQUIRE(IsFloating(v.dtype), InvalidArgument,
               fn << ": `" << arg << "` has dtype " << DTypeName(v.dtype)
                  << "; expected float32, float16 or bfloat16");
}

// Shapes must match exactly (the strided walk checks too, but cannot name the arguments).
void RequireSameShape(const TensorView& a, const TensorView& b, const char* fn, const char* a_name,
                      const char* b_name) {
  bool same = a.ndim == b.ndim;
  for (int d = 0; same && d < a.ndim; ++d) same = a.shape[d] == b.shape[d];
  QKIT_REQUIRE(same, InvalidArgument,
               fn << ": `" << b_name << "` has shape " << b.ShapeString() << " but `" << a_name
                  << "` has shape " << a.ShapeString());
}

// Lowest and highest element offsets (in elements, relative to `data`) of a non-empty view.
std::pair<int64_t, int64_t> ElementSpan(const TensorView& v) {
  int64_t lo = 0, hi = 0;
  for (int d = 0; d < v.ndim; ++d) {
    const int64_t reach = v.strides[d] * (v.shape[d] - 1);
    if (reach < 0)
      lo += reach;
    else
      hi += reach;
  }
  return {lo, hi};
}

// Sufficient test that no two elements of `v` share memory: ordered by |stride|, each dim steps
// past everything the smaller dims reach. (Rejects stride 0 on a dim of size > 1.)
bool HasNoInternalOverlap(const TensorView& v) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (|stride|, size)
  for (int d = 0; d < v.ndim; ++d) {
    if (v.shape[d] > 1) dims.emplace_back(std::llabs(v.strides[d]), v.shape[d]);
  }
  std::sort(dims.begin(), dims.end());
  int64_t reach = 0;
  for (const auto& [stride, size] : dims) {
    if (stride <= reach) return false;
    reach += stride * (size - 1);
  }
  return true;
}

void RequireWritable(const TensorView& out, const char* fn, const char* arg) {
  QKIT_REQUIRE(HasNoInternalOverlap(out), InvalidArgument,
               fn << ": `" << arg << "` (shape " << out.ShapeString()
                  << ") has elements that share memory (a zero or overlapping stride); outputs "
                     "must not");
}

bool SameView(const TensorView& a, const TensorView& b) {
  if (a.data != b.data || a.dtype != b.dtype || a.ndim != b.ndim) return false;
  for (int d = 0; d < a.ndim; ++d) {
    if (a.shape[d] != b.shape[d]) return false;
    if (a.shape[d] > 1 && a.strides[d] != b.strides[d]) return false;
  }
  return true;
}

// [first byte, one past the last byte) of a non-empty view.
std::pair<const char*, const char*> ByteSpan(const TensorView& v) {
  const auto [lo, hi] = ElementSpan(v);
  const int64_t es = static_cast<int64_t>(DTypeSize(v.dtype));
  const char* base = static_cast<const char*>(v.data);
  return {base + lo * es, base + (hi + 1) * es};
}

bool BytesOverlap(const TensorView& a, const TensorView& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  const auto [a0, a1] = ByteSpan(a);
  const auto [b0, b1] = ByteSpan(b);
  return a0 < b1 && b0 < a1;
}

// `out` must be exactly `in` (element-wise in place) or not overlap it at all.
// Returns true when it is exactly `in`.
bool RequireExactOrNoAlias(const TensorView& in, const TensorView& out, const char* fn,
                           const char* in_name, const char* out_name) {
  if (SameView(in, out)) return true;
  QKIT_REQUIRE(!BytesOverlap(in, out), InvalidArgument,
               fn << ": `" << out_name << "` overlaps `" << in_name
                  << "` without being the same view (same data pointer, dtype and strides); "
                     "in-place use must pass the very same view");
  return false;
}

void RequireExactInFloat(int64_t q, const char* fn, const char* name) {
  QKIT_REQUIRE(static_cast<int64_t>(static_cast<float>(q)) == q, InvalidArgument,
               fn << ": `" << name << "`=" << q << " is not exactly representable in float32");
}

const char* NanModeName(NanMode m) {
  switch (m) {
    case NanMode::kPropagate:
      return "propagate";
    case NanMode::kToQuantMin:
      return "to_quant_min";
    case NanMode::kError:
      return "error";
  }
  return "unknown";
}

// The per-slot tables of FqTables, owned.
// 64-byte aligned, so that the per-element (param_step 1) loads of the kernels never split
// cache lines (measured: 25% slower channels-last fake quant with unaligned tables).
struct Tables {
  hwy::AlignedFreeUniquePtr<float[]> buf;
  float* qa = nullptr;
  float* da = nullptr;
  float* z = nullptr;

  void Resize(size_t n) {
    const size_t stride = (n + 15) / 16 * 16 + 16;
    buf = hwy::AllocateAligned<float>(3 * stride);
    qa = buf.get();
    da = qa + stride;
    z = da + stride;
  }
  FqTables View() const { return {qa, da, z}; }
};

// Validates the caller's parameters (count, finiteness, sign, zero point in range) and builds
// the per-slot tables, O(num_params).
Tables BuildTables(const QuantSpec& spec, const QParamsView& qp, int64_t num_params,
                   const TensorView& x, const char* fn, bool integral_zero_point) {
  QKIT_REQUIRE(qp.count == num_params, InvalidArgument,
               fn << ": `qparams.count`=" << qp.count << " but layout " << spec.layout.ToString()
                  << " of a tensor of shape " << x.ShapeString() << " has " << num_params
                  << " parameter slot(s)");
  QKIT_REQUIRE(qp.scale != nullptr || num_params == 0, InvalidArgument,
               fn << ": `qparams.scale` is null (" << num_params << " slot(s) expected)");
  const bool multiplier = spec.scale_mode == ScaleMode::kMultiplier;
  const int64_t qmin = spec.QuantMin(), qmax = spec.QuantMax();
  Tables t;
  const size_t n = static_cast<size_t>(num_params);
  t.Resize(n);
  for (int64_t p = 0; p < num_params; ++p) {
    const float s = qp.scale[p];
    if (multiplier) {
      QKIT_REQUIRE(std::isfinite(s) && s >= 0.0f, InvalidArgument,
                   fn << ": `scale[" << p << "]`=" << s
                      << " must be finite and >= 0 (scale_mode=multiplier: the multiplier "
                         "1/step; 0 quantizes every element to the zero point)");
    } else {
      QKIT_REQUIRE(std::isfinite(s) && s > 0.0f, InvalidArgument,
                   fn << ": `scale[" << p << "]`=" << s << " must be finite and > 0 (scale_mode="
                      << ScaleModeName(spec.scale_mode) << ")");
    }
    const float z = qp.zero_point ? qp.zero_point[p] : 0.0f;
    QKIT_REQUIRE(std::isfinite(z), InvalidArgument,
                 fn << ": `zero_point[" << p << "]`=" << z << " is not finite");
    if (!(z >= static_cast<float>(qmin) && z <= static_cast<float>(qmax))) {
      QKIT_REQUIRE(spec.allow_zero_point_outside_range, InvalidArgument,
                   fn << ": `zero_point[" << p << "]`=" << z << " outside [`quant_min`=" << qmin
                      << ", `quant_max`=" << qmax << "]");
      QKIT_REQUIRE(z == std::nearbyint(z), InvalidArgument,
                   fn << ": `zero_point[" << p << "]`=" << z << " outside [`quant_min`=" << qmin
                      << ", `quant_max`=" << qmax << "] must be integral");
      const double reach = std::max(static_cast<double>(qmax) - z, z - static_cast<double>(qmin));
      QKIT_REQUIRE(reach <= 16777216.0, InvalidArgument,
                   fn << ": `zero_point[" << p << "]`=" << std::setprecision(9) << z << " is "
                      << reach
                      << " codes from the far end of [`quant_min`=" << qmin << ", `quant_max`="
                      << qmax << "]; code - zero_point must be exact in float32 (<= 2^24)");
    }
    if (integral_zero_point) {
      QKIT_REQUIRE(z == std::nearbyint(z), InvalidArgument,
                   fn << ": `zero_point[" << p << "]`=" << z
                      << " must be integral to give integer codes with "
                         "zero_point_mode=add_after_round");
    }
    float qa = s, da = s;
    if (spec.scale_mode == ScaleMode::kMultiplyReciprocal) {
      qa = 1.0f / s;  // f32(1/s), rounded once here, as PyTorch's kernel does
      QKIT_REQUIRE(std::isfinite(qa), InvalidArgument,
                   fn << ": `scale[" << p << "]`=" << s
                      << " has no finite float32 reciprocal (scale_mode=multiply_reciprocal)");
    } else if (multiplier && s == 0.0f) {
      da = 1.0f;  // NVIDIA's rule: an all-zero-point tensor dequantizes with m := 1
    }
    t.qa[p] = qa;
    t.da[p] = da;
    // Codes are integers, so neither they nor the zero point are ever -0 (z + 0 maps -0 to
    // +0; the kernel adds +0 after rounding to do the same for a -0 code). Then
    // Dequantize(Quantize(x)) equals FakeQuantize(x) bit for bit.
    t.z[p] = z + 0.0f;
  }
  return t;
}

// Range of the spec, validated for float arithmetic.
std::pair<float, float> FloatRange(const QuantSpec& spec, const char* fn) {
  const int64_t qmin = spec.QuantMin(), qmax = spec.QuantMax();
  RequireExactInFloat(qmin, fn, "quant_min");
  RequireExactInFloat(qmax, fn, "quant_max");
  return {static_cast<float>(qmin), static_cast<float>(qmax)};
}

// ---------------------------------------------------------------- periodic fast path

// Sets up FqCall::tile / pt / base when every operand is contiguous float32 and the layout
// is per channel with short walk runs; `storage` owns the expanded tables.
void MaybePeriodic(const TensorView* const* ops, int nops, const QuantSpec& spec, const Tables& t,
                   FqCall& c, Tables& storage) {
  if (spec.layout.granularity != Granularity::kPerChannel) return;
  const TensorView& x = *ops[0];
  for (int i = 0; i < nops; ++i) {
    if (ops[i]->dtype != DType::kFloat32 || !ops[i]->IsContiguous()) return;
  }
  const int64_t axis = spec.layout.axis < 0 ? spec.layout.axis + x.ndim : spec.layout.axis;
  int64_t inner = 1;
  for (int d = static_cast<int>(axis) + 1; d < x.ndim; ++d) inner *= x.shape[d];
  const int64_t channels = x.shape[axis];
  const int64_t period = channels * inner;
  // Walk runs: `inner` elements (axis not innermost) or `channels` (innermost axis).
  const int64_t walk_run = inner > 1 ? inner : channels;
  if (walk_run >= kShortRun || period > kMaxPeriod || period >= x.numel()) return;
  int64_t unit = std::lcm(period, int64_t{16});
  if (unit > kMaxPeriod) unit = period;
  const int64_t tile = unit * ((kMinTile + unit - 1) / unit);
  const size_t len = static_cast<size_t>(tile);
  storage.Resize(len);
  // Entry j holds slot (j / inner) % channels (counters instead of a division per entry).
  size_t p = 0;
  int64_t k = 0;
  for (size_t j = 0; j < len; ++j) {
    storage.qa[j] = t.qa[p];
    storage.da[j] = t.da[p];
    storage.z[j] = t.z[p];
    if (++k == inner) {
      k = 0;
      if (++p == static_cast<size_t>(channels)) p = 0;
    }
  }
  c.tile = tile;
  c.pt = storage.View();
  for (int i = 0; i < nops; ++i) c.base[i] = static_cast<char*>(ops[i]->data);
}

// ---------------------------------------------------------------- driving

template <class Fn>
void ForChunks(int64_t numel, const Context& ctx, Fn&& fn) {
  const int64_t chunks = internal::NumChunks(numel, internal::kGrain);
  internal::ParallelFor(chunks, ctx.num_threads, [&](int64_t chunk, int) {
    const int64_t begin = chunk * internal::kGrain;
    fn(chunk, begin, std::min(numel, begin + internal::kGrain));
  });
}

void RequireThreads(const Context& ctx, const char* fn) {
  QKIT_REQUIRE(ctx.num_threads >= 1, InvalidArgument,
               fn << ": `ctx.num_threads`=" << ctx.num_threads << " must be >= 1");
}

// Logical index of the first NaN in x (any strides / floating dtype), or -1.
int64_t FirstNaN(const TensorView& x, const Context& ctx, const char* fn) {
  const TensorView* views[] = {&x};
  const Walk walk(views, 1, ParamLayout::PerTensor(), fn);
  FqCall c;
  c.walk = &walk;
  const int64_t chunks = internal::NumChunks(walk.numel(), internal::kGrain);
  std::vector<int64_t> first(static_cast<size_t>(chunks), -1);
  ForChunks(walk.numel(), ctx, [&](int64_t chunk, int64_t begin, int64_t end) {
    first[static_cast<size_t>(chunk)] = HWY_DYNAMIC_DISPATCH(FirstNaNChunk)(c, begin, end);
  });
  for (int64_t f : first) {
    if (f >= 0) return f;
  }
  return -1;
}

void RequireNoNaN(const TensorView& x, const QuantSpec& spec, const Context& ctx, const char* fn,
                  const char* name) {
  if (spec.nan_mode != NanMode::kError) return;
  const int64_t i = FirstNaN(x, ctx, fn);
  QKIT_REQUIRE(i < 0, InvalidArgument,
               fn << ": `" << name << "` has NaN at logical index " << i
                  << " (nan_mode=" << NanModeName(spec.nan_mode) << "); nothing was written");
}

void FillCommon(const QuantSpec& spec, float qmin, float qmax, FqCall& c) {
  c.qmin = qmin;
  c.qmax = qmax;
  c.rounding = spec.rounding;
  c.scale_mode = spec.scale_mode;
  c.zp_before_round = spec.zero_point_mode == ZeroPointMode::kAddBeforeRound;
  c.nan_to_qmin = spec.nan_mode == NanMode::kToQuantMin;
}

std::pair<int64_t, int64_t> IntegerRange(DType d) {
  switch (d) {
    case DType::kInt8:
      return {INT8_MIN, INT8_MAX};
    case DType::kUInt8:
      return {0, UINT8_MAX};
    case DType::kInt16:
      return {INT16_MIN, INT16_MAX};
    case DType::kInt32:
      return {INT32_MIN, INT32_MAX};
    default:
      return {1, 0};  // not an integer dtype
  }
}

}  // namespace

// ---------------------------------------------------------------- public entry points

void FakeQuantize(const TensorView& x, const QuantSpec& spec, const QParamsView& qparams,
                  const TensorView& out, uint8_t* mask, const Context& ctx) {
  const char* fn = kFakeQuantize;
  spec.Validate(fn);
  RequireThreads(ctx, fn);
  RequireFloating(x, fn, "x");
  RequireFloating(out, fn, "out");
  RequireSameShape(x, out, fn, "x", "out");
  const TensorView* views[] = {&x, &out};
  const Walk walk(views, 2, spec.layout, fn);
  RequireWritable(out, fn, "out");
  const bool in_place = RequireExactOrNoAlias(x, out, fn, "x", "out");
  const auto [qmin, qmax] = FloatRange(spec, fn);
  const Tables tables = BuildTables(spec, qparams, walk.num_params(), x, fn, false);
  const int64_t numel = walk.numel();
  if (numel == 0) return;
  RequireNoNaN(x, spec, ctx, fn, "x");

  FqCall c;
  c.walk = &walk;
  c.t = tables.View();
  FillCommon(spec, qmin, qmax, c);
  c.mask_out = mask;
  c.stream = !in_place && out.dtype == DType::kFloat32 &&
             numel * static_cast<int64_t>(sizeof(float)) >= kStreamMinBytes;
  Tables periodic;
  MaybePeriodic(views, 2, spec, tables, c, periodic);
  ForChunks(numel, ctx, [&](int64_t, int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(FakeQuantizeChunk)(c, begin, end);
  });
}

void Quantize(const TensorView& x, const QuantSpec& spec, const QParamsView& qparams,
              const TensorView& q_out, const Context& ctx) {
  const char* fn = kQuantize;
  spec.Validate(fn);
  RequireThreads(ctx, fn);
  RequireFloating(x, fn, "x");
  const bool float_codes = q_out.dtype == DType::kFloat32;
  const auto [tmin, tmax] = IntegerRange(q_out.dtype);
  QKIT_REQUIRE(float_codes || tmin <= tmax, InvalidArgument,
               fn << ": `q_out` has dtype " << DTypeName(q_out.dtype)
                  << "; expected int8, uint8, int16, int32 or float32");
  const int64_t qmin_i = spec.QuantMin(), qmax_i = spec.QuantMax();
  QKIT_REQUIRE(float_codes || (tmin <= qmin_i && qmax_i <= tmax), InvalidArgument,
               fn << ": `q_out` dtype " << DTypeName(q_out.dtype) << " [" << tmin << ", " << tmax
                  << "] cannot hold [`quant_min`=" << qmin_i << ", `quant_max`=" << qmax_i << "]");
  RequireSameShape(x, q_out, fn, "x", "q_out");
  const TensorView* views[] = {&x, &q_out};
  const Walk walk(views, 2, spec.layout, fn);
  RequireWritable(q_out, fn, "q_out");
  // Integer codes: the dtypes differ, so q_out must not overlap x. Float32 codes may be x itself
  // (each block of x is read before its codes are written).
  RequireExactOrNoAlias(x, q_out, fn, "x", "q_out");
  const auto [qmin, qmax] = FloatRange(spec, fn);  // also: float32 holds every code exactly
  const bool after = spec.zero_point_mode == ZeroPointMode::kAddAfterRound;
  const Tables tables = BuildTables(spec, qparams, walk.num_params(), x, fn, after);
  const int64_t numel = walk.numel();
  if (numel == 0) return;

  FqCall c;
  c.walk = &walk;
  c.t = tables.View();
  FillCommon(spec, qmin, qmax, c);
  const int64_t chunks = internal::NumChunks(numel, internal::kGrain);
  std::vector<uint8_t> saw_nan(static_cast<size_t>(chunks), 0);
  ForChunks(numel, ctx, [&](int64_t chunk, int64_t begin, int64_t end) {
    saw_nan[static_cast<size_t>(chunk)] = HWY_DYNAMIC_DISPATCH(QuantizeChunk)(c, begin, end);
  });
  const bool nan_fails = spec.nan_mode == NanMode::kError ||
                         (spec.nan_mode == NanMode::kPropagate && !float_codes);
  if (nan_fails && std::find(saw_nan.begin(), saw_nan.end(), 1) != saw_nan.end()) {
    // (In place, x's NaN were kept in the float codes, so FirstNaN still finds the first.)
    QKIT_FAIL(InvalidArgument, fn << ": `x` has NaN at logical index " << FirstNaN(x, ctx, fn)
                                  << " (nan_mode=" << NanModeName(spec.nan_mode) << "); "
                                  << (float_codes ? "" : "integer codes have no NaN (use "
                                                         "nan_mode=to_quant_min, or float32 "
                                                         "codes with nan_mode=propagate); ")
                                  << "the contents of `q_out` are unspecified");
  }
}

void Dequantize(const TensorView& q, const QuantSpec& spec, const QParamsView& qparams,
                const TensorView& out, const Context& ctx) {
  const char* fn = kDequantize;
  spec.Validate(fn);
  RequireThreads(ctx, fn);
  const auto [tmin, tmax] = IntegerRange(q.dtype);
  QKIT_REQUIRE(
      tmin <= tmax, InvalidArgument,
      fn << ": `q` has dtype " << DTypeName(q.dtype) << "; expected int8, uint8, int16 or int32");
  RequireFloating(out, fn, "out");
  RequireSameShape(q, out, fn, "q", "out");
  const TensorView* views[] = {&q, &out};
  const Walk walk(views, 2, spec.layout, fn);
  RequireWritable(out, fn, "out");
  RequireExactOrNoAlias(q, out, fn, "q", "out");
  FloatRange(spec, fn);
  const Tables tables = BuildTables(spec, qparams, walk.num_params(), q, fn, false);
  const int64_t numel = walk.numel();
  if (numel == 0) return;

  FqCall c;
  c.walk = &walk;
  c.t = tables.View();
  c.scale_mode = spec.scale_mode;
  ForChunks(numel, ctx, [&](int64_t, int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(DequantizeChunk)(c, begin, end);
  });
}

void FakeQuantizeBackwardMasked(const TensorView& dy, const uint8_t* mask, const TensorView& dx,
                                const Context& ctx) {
  const char* fn = kBackwardMasked;
  RequireThreads(ctx, fn);
  RequireFloating(dy, fn, "dy");
  RequireFloating(dx, fn, "dx");
  RequireSameShape(dy, dx, fn, "dy", "dx");
  const TensorView* views[] = {&dy, &dx};
  const Walk walk(views, 2, ParamLayout::PerTensor(), fn);
  RequireWritable(dx, fn, "dx");
  const bool in_place = RequireExactOrNoAlias(dy, dx, fn, "dy", "dx");
  const int64_t numel = walk.numel();
  if (numel == 0) return;
  QKIT_REQUIRE(mask != nullptr, InvalidArgument,
               fn << ": `mask` is null for a tensor of " << numel << " elements (needs "
                  << MaskBytes(numel) << " bytes)");
  FqCall c;
  c.walk = &walk;
  c.mask_in = mask;
  c.stream = !in_place && dx.dtype == DType::kFloat32 &&
             numel * static_cast<int64_t>(sizeof(float)) >= kStreamMinBytes;
  ForChunks(numel, ctx, [&](int64_t, int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(BackwardMaskedChunk)(c, begin, end);
  });
}

void FakeQuantizeBackwardClipped(const TensorView& dy, const TensorView& x, const QuantSpec& spec,
                                 const QParamsView& qparams, const TensorView& dx,
                                 const Context& ctx) {
  const char* fn = kBackwardClipped;
  spec.Validate(fn);
  RequireThreads(ctx, fn);
  RequireFloating(dy, fn, "dy");
  RequireFloating(x, fn, "x");
  RequireFloating(dx, fn, "dx");
  RequireSameShape(dy, x, fn, "dy", "x");
  RequireSameShape(dy, dx, fn, "dy", "dx");
  const TensorView* views[] = {&dy, &x, &dx};
  const Walk walk(views, 3, spec.layout, fn);
  RequireWritable(dx, fn, "dx");
  const bool dx_is_dy = RequireExactOrNoAlias(dy, dx, fn, "dy", "dx");
  const bool dx_is_x = RequireExactOrNoAlias(x, dx, fn, "x", "dx");
  const bool in_place = dx_is_dy || dx_is_x;
  const auto [qmin, qmax] = FloatRange(spec, fn);
  const Tables tables = BuildTables(spec, qparams, walk.num_params(), x, fn, false);
  const int64_t numel = walk.numel();
  if (numel == 0) return;
  RequireNoNaN(x, spec, ctx, fn, "x");

  FqCall c;
  c.walk = &walk;
  c.t = tables.View();
  FillCommon(spec, qmin, qmax, c);
  c.stream = !in_place && dx.dtype == DType::kFloat32 &&
             numel * static_cast<int64_t>(sizeof(float)) >= kStreamMinBytes;
  Tables periodic;
  MaybePeriodic(views, 3, spec, tables, c, periodic);
  ForChunks(numel, ctx, [&](int64_t, int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(BackwardClippedChunk)(c, begin, end);
  });
}

}  // namespace qkit

#endif  // HWY_ONCE
