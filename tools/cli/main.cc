// qkit: command-line calibration tool (docs/cli.md).
//
//   qkit calibrate FILE... [--method M]... [--bits B] [--unsigned] [--narrow-range] [--affine]
//                          [--per-channel AXIS] [--threads N] [--batch N] [--json PATH]
//
// Reads tensors from .npy files (qkit::ReadNpy, which rejects malformed files), feeds them to
// the chosen observers, chooses (scale, zero point) with qkit::ChooseQParams (through the
// observers), fake-quantizes with qkit::FakeQuantize and reports the result. No quantization
// formula lives here: this file parses, calls the core and formats. The SQNR and the clipped
// fraction are reporting statistics computed from the core's outputs (x^ and the mask).
//
// Exit codes: 0 success, 1 bad input (unreadable / malformed file, data the core rejects),
// 2 usage error (unknown flag, bad flag value).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "qkit/context.h"
#include "qkit/error.h"
#include "qkit/io/npy.h"
#include "qkit/observers/observers.h"
#include "qkit/ops/fake_quant.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

// The histogram-based methods are compiled in when the core has them.
#if __has_include("qkit/observers/histogram_calibrator.h") && \
    __has_include("qkit/observers/histogram_observer.h")
#define QKIT_CLI_HAS_HISTOGRAM 1
#include "qkit/observers/histogram_calibrator.h"
#include "qkit/observers/histogram_observer.h"
#else
#define QKIT_CLI_HAS_HISTOGRAM 0
#endif

namespace {

constexpr int kExitBadInput = 1;
constexpr int kExitUsage = 2;
constexpr int64_t kProgressThreshold = int64_t{1} << 24;  // 16M elements

// Every method the CLI knows, in table order, and those this build implements.
const std::vector<std::string> kAllMethods = {"minmax",  "ema", "histogram-l2",
                                              "entropy", "mse", "percentile"};
#if QKIT_CLI_HAS_HISTOGRAM
const std::vector<std::string> kAvailableMethods = kAllMethods;
#else
const std::vector<std::string> kAvailableMethods = {"minmax", "ema"};
#endif

struct Options {
  std::vector<std::string> files;
  std::vector<std::string> methods;
  int bits = 8;
  bool is_unsigned = false;
  bool narrow_range = false;
  bool affine = false;
  std::optional<int64_t> per_channel_axis;
  std::optional<double> percentile;
  int threads = 1;
  int64_t batch = 1;
  std::string json_path;
};

// Thrown for input problems (exit code 1).
struct InputError {
  std::string message;
};

// The result of one method on one file.
struct MethodResult {
  std::string method;
  std::vector<float> scale;
  std::vector<float> zero_point;
  double clipped_fraction = 0;
  double sqnr_db = 0;  // +inf when the quantization is exact
  double time_ms = 0;
  int64_t nonfinite = 0;
};

struct FileResult {
  std::string file;
  std::string dtype;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  std::vector<MethodResult> methods;
};

// ---- progress on stderr ------------------------------------------------------------------

class Progress {
 public:
  Progress(const std::string& file, int64_t numel)
      : enabled_(numel > kProgressThreshold && isatty(STDERR_FILENO)), file_(file) {}
  ~Progress() {
    if (enabled_ && shown_) std::fprintf(stderr, "\r\033[K");
  }
  void Show(const std::string& method, int64_t done, int64_t total) {
    if (!enabled_) return;
    shown_ = true;
    std::fprintf(stderr, "\r\033[Kqkit: %s: %s %3d%%", file_.c_str(), method.c_str(),
                 static_cast<int>(total > 0 ? 100 * done / total : 100));
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  bool shown_ = false;
  std::string file_;
};

// ---- input conversion ----------------------------------------------------------------------

// IEEE binary16 -> float32 (exact); the npy reader keeps float16 files as float16.
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  float magnitude;
  if (exp == 0) {
    magnitude = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    magnitude = mant ? std::numeric_limits<float>::quiet_NaN()
                     : std::numeric_limits<float>::infinity();
  } else {
    magnitude = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &magnitude, 4);
  bits |= sign;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// Every supported .npy dtype as float32 (int32 values beyond 2^24 round to nearest).
std::vector<float> ToFloat32(const qkit::NpyArray& a) {
  const int64_t n = a.numel();
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = a.data.data();
  for (int64_t i = 0; i < n; ++i) {
    float v = 0;
    switch (a.dtype) {
      case qkit::DType::kFloat32: std::memcpy(&v, p + 4 * i, 4); break;
      case qkit::DType::kFloat16: {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        v = HalfToFloat(h);
        break;
      }
      case qkit::DType::kBFloat16: {
        uint32_t bits = 0;
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&v, &bits, 4);
        break;
      }
      case qkit::DType::kInt8: v = static_cast<int8_t>(p[i]); break;
      case qkit::DType::kUInt8: v = p[i]; break;
      case qkit::DType::kInt16: {
        int16_t s;
        std::memcpy(&s, p + 2 * i, 2);
        v = s;
        break;
      }
      case qkit::DType::kInt32: {
        int32_t s;
        std::memcpy(&s, p + 4 * i, 4);
        v = static_cast<float>(s);
        break;
      }
    }
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

// ---- calibration -------------------------------------------------------------------------

qkit::QuantSpec MakeSpec(const Options& o) {
  qkit::QuantSpec spec;
  spec.bits = o.bits;
  spec.is_signed = !o.is_unsigned;
  spec.narrow_range = o.narrow_range;
  spec.symmetric = !o.affine;
  if (o.per_channel_axis) spec.layout = qkit::ParamLayout::PerChannel(*o.per_channel_axis);
  return spec;
}

// The views fed to the observers: x split into `batch` chunks along axis 0 (fewer when
// shape[0] is smaller; a 0-d tensor is one chunk).
std::vector<qkit::TensorView> Chunks(float* data, const std::vector<int64_t>& shape,
                                     int64_t batch) {
  const int ndim = static_cast<int>(shape.size());
  qkit::TensorView whole = qkit::TensorView::Contiguous(data, qkit::DType::kFloat32, ndim,
                                                        shape.data());
  if (ndim == 0 || batch <= 1 || shape[0] <= 1) return {whole};
  const int64_t rows = shape[0];
  const int64_t row_elems = rows > 0 ? whole.numel() / rows : 0;
  const int64_t n = std::min(batch, rows);
  std::vector<qkit::TensorView> out;
  for (int64_t c = 0; c < n; ++c) {
    const int64_t begin = rows * c / n, end = rows * (c + 1) / n;
    qkit::TensorView v = whole;
    v.data = data + begin * row_elems;
    v.shape[0] = end - begin;
    out.push_back(v);
  }
  return out;
}

MethodResult RunMethod(const std::string& method, std::vector<float>& x,
                       const std::vector<int64_t>& shape, const Options& o,
                       const qkit::QuantSpec& spec, Progress& progress) {
  const qkit::Context ctx{o.threads};
  const qkit::QParamsRule rule;  // qkit defaults (docs/qparams.md)
  const std::vector<qkit::TensorView> chunks = Chunks(x.data(), shape, o.batch);
  const int64_t total = static_cast<int64_t>(chunks.size());

  MethodResult r;
  r.method = method;
  const auto t0 = std::chrono::steady_clock::now();
  auto observe_all = [&](auto& observer) {
    for (int64_t i = 0; i < total; ++i) {
      observer.Observe(chunks[static_cast<size_t>(i)], ctx);
      progress.Show(method, i + 1, total);
    }
    if (observer.empty()) throw InputError{"no finite values to calibrate on"};
    r.scale.resize(static_cast<size_t>(observer.num_slots()));
    r.zero_point.resize(r.scale.size());
    observer.ComputeQParams(spec, rule, r.scale.data(), r.zero_point.data());
    r.nonfinite = observer.nonfinite_count();
  };
  if (method == "minmax") {
    qkit::MinMaxObserverOptions opt;
    opt.layout = spec.layout;
    qkit::MinMaxObserver observer(opt);
    observe_all(observer);
  } else if (method == "ema") {
    qkit::MovingAverageObserverOptions opt = qkit::MovingAverageObserverOptions::Torch();
    opt.layout = spec.layout;
    qkit::MovingAverageObserver observer(opt);
    observe_all(observer);
#if QKIT_CLI_HAS_HISTOGRAM
  } else if (method == "histogram-l2") {
    qkit::HistogramObserverOptions opt;
    opt.layout = spec.layout;
    qkit::HistogramObserver observer(opt);
    observe_all(observer);
  } else if (method == "entropy" || method == "mse" || method == "percentile") {
    // NVIDIA HistogramCalibrator: amax per slot, then the range [-amax, amax] goes through
    // ChooseQParams like every other method.
    qkit::HistogramCalibratorOptions opt;
    opt.layout = spec.layout;
    opt.num_bits = spec.bits;
    opt.is_unsigned = !spec.is_signed;
    qkit::HistogramCalibrator calibrator(opt);
    for (int64_t i = 0; i < total; ++i) {
      calibrator.Observe(chunks[static_cast<size_t>(i)], ctx);
      progress.Show(method, i + 1, total);
    }
    if (calibrator.empty()) throw InputError{"no finite values to calibrate on"};
    const std::optional<std::vector<float>> amax = calibrator.ComputeAmax(
        qkit::ParseCalibMethod(method), 1, 128, o.percentile.value_or(99.99));
    if (!amax) throw InputError{"calibrator " + method + " collected nothing"};
    std::vector<float> lo(amax->size());
    for (size_t i = 0; i < lo.size(); ++i) lo[i] = -(*amax)[i];
    r.scale.resize(amax->size());
    r.zero_point.resize(amax->size());
    qkit::ChooseQParams(lo.data(), amax->data(), static_cast<int64_t>(lo.size()), spec, rule,
                        r.scale.data(), r.zero_point.data(), "qkit calibrate");
    r.nonfinite = calibrator.nonfinite_count();
#endif
  } else {
    throw InputError{"method " + method + " is not available in this build"};
  }
  const auto t1 = std::chrono::steady_clock::now();
  r.time_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();

  // Fake-quantize the whole tensor with the chosen parameters.
  const int ndim = static_cast<int>(shape.size());
  const qkit::TensorView xv =
      qkit::TensorView::Contiguous(x.data(), qkit::DType::kFloat32, ndim, shape.data());
  const int64_t n = xv.numel();
  std::vector<float> xq(static_cast<size_t>(n));
  std::vector<uint8_t> mask(static_cast<size_t>(qkit::MaskBytes(n)));
  const qkit::TensorView outv =
      qkit::TensorView::Contiguous(xq.data(), qkit::DType::kFloat32, ndim, shape.data());
  const qkit::QParamsView qp{r.scale.data(), r.zero_point.data(),
                             static_cast<int64_t>(r.scale.size())};
  qkit::FakeQuantize(xv, spec, qp, outv, mask.data(), ctx);

  // Reporting statistics (double): clipped = mask bit 0 (code saturates, or NaN);
  // SQNR over the finite elements.
  int64_t clipped = 0;
  for (int64_t i = 0; i < n; ++i) clipped += ((mask[static_cast<size_t>(i >> 3)] >> (i & 7)) & 1) == 0;
  double signal = 0, noise = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = x[static_cast<size_t>(i)];
    if (!std::isfinite(a)) continue;
    const double d = a - static_cast<double>(xq[static_cast<size_t>(i)]);
    signal += a * a;
    noise += d * d;
  }
  r.clipped_fraction = n > 0 ? static_cast<double>(clipped) / static_cast<double>(n) : 0.0;
  if (noise == 0) {
    r.sqnr_db = std::numeric_limits<double>::infinity();
  } else if (signal == 0) {
    r.sqnr_db = -std::numeric_limits<double>::infinity();
  } else {
    r.sqnr_db = 10.0 * std::log10(signal / noise);
  }
  return r;
}

FileResult CalibrateFile(const std::string& file, const Options& o, const qkit::QuantSpec& spec) {
  qkit::NpyArray a = qkit::ReadNpy(file);
  FileResult fr;
  fr.file = file;
  fr.dtype = qkit::DTypeName(a.dtype);
  fr.shape = a.shape;
  fr.numel = a.numel();
  if (fr.numel == 0) throw InputError{"empty array (shape " + a.View().ShapeString() + ")"};
  if (static_cast<int>(a.shape.size()) > qkit::kMaxDims) {
    throw InputError{"more than " + std::to_string(qkit::kMaxDims) + " dimensions"};
  }
  if (o.per_channel_axis) {
    const int64_t nd = static_cast<int64_t>(a.shape.size());
    const int64_t axis = *o.per_channel_axis < 0 ? *o.per_channel_axis + nd : *o.per_channel_axis;
    if (axis < 0 || axis >= nd) {
      throw InputError{"--per-channel " + std::to_string(*o.per_channel_axis) +
                       " is outside the array's " + std::to_string(nd) + " dimensions"};
    }
    if (axis == 0 && o.batch > 1) {
      throw InputError{"--batch splits axis 0, which is the --per-channel axis"};
    }
  }
  std::vector<float> x = ToFloat32(a);
  a.data.clear();
  a.data.shrink_to_fit();
  Progress progress(file, fr.numel);
  for (const std::string& m : o.methods) fr.methods.push_back(RunMethod(m, x, fr.shape, o, spec, progress));
  return fr;
}

// ---- output ------------------------------------------------------------------------------

std::string FormatDouble(const char* fmt, double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (std::isnan(v)) return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void PrintTable(const FileResult& fr, const qkit::QuantSpec& spec) {
  std::printf("%s: %s %s, %lld elements; %s\n", fr.file.c_str(), fr.dtype.c_str(),
              ShapeString(fr.shape).c_str(), static_cast<long long>(fr.numel),
              spec.ToString().c_str());
  const bool per_channel = !fr.methods.empty() && fr.methods[0].scale.size() > 1;
  std::printf("%-12s %14s %10s %10s %10s %10s\n", "method",
              per_channel ? "scale[0]" : "scale", per_channel ? "zp[0]" : "zero_pt", "clipped",
              "sqnr_db", "time_ms");
  for (const MethodResult& r : fr.methods) {
    std::printf("%-12s %14s %10s %10s %10s %10s\n", r.method.c_str(),
                FormatDouble("%.8g", r.scale[0]).c_str(),
                FormatDouble("%g", r.zero_point[0]).c_str(),
                FormatDouble("%.6f", r.clipped_fraction).c_str(),
                FormatDouble("%.2f", r.sqnr_db).c_str(), FormatDouble("%.3f", r.time_ms).c_str());
  }
  if (per_channel) {
    std::printf("(%zu channels; first channel shown, all in --json)\n",
                fr.methods[0].scale.size());
  }
}

nlohmann::json JsonNumber(double v) {
  if (!std::isfinite(v)) return nullptr;  // JSON has no inf / nan
  return v;
}

nlohmann::json ToJson(const std::vector<FileResult>& results, const Options& o,
                      const qkit::QuantSpec& spec) {
  nlohmann::json j;
  j["version"] = 1;
  j["spec"] = {{"bits", spec.bits},
               {"signed", spec.is_signed},
               {"narrow_range", spec.narrow_range},
               {"symmetric", spec.symmetric},
               {"quant_min", spec.QuantMin()},
               {"quant_max", spec.QuantMax()},
               {"per_channel_axis", o.per_channel_axis ? nlohmann::json(*o.per_channel_axis)
                                                       : nlohmann::json(nullptr)},
               {"description", spec.ToString()}};
  j["batch"] = o.batch;
  j["threads"] = o.threads;
  nlohmann::json files = nlohmann::json::array();
  for (const FileResult& fr : results) {
    nlohmann::json f;
    f["file"] = fr.file;
    f["dtype"] = fr.dtype;
    f["shape"] = fr.shape;
    f["numel"] = fr.numel;
    nlohmann::json methods = nlohmann::json::array();
    for (const MethodResult& r : fr.methods) {
      nlohmann::json m;
      m["method"] = r.method;
      // float -> double is exact, so the JSON holds the float32 values exactly.
      std::vector<double> s(r.scale.begin(), r.scale.end());
      std::vector<double> z(r.zero_point.begin(), r.zero_point.end());
      m["scale"] = s;
      m["zero_point"] = z;
      m["clipped_fraction"] = r.clipped_fraction;
      m["sqnr_db"] = JsonNumber(r.sqnr_db);
      m["time_ms"] = r.time_ms;
      m["nonfinite_count"] = r.nonfinite;
      methods.push_back(m);
    }
    f["methods"] = methods;
    files.push_back(f);
  }
  j["files"] = files;
  return j;
}

// Temp file in the same directory, then rename: a failed run leaves no half-written JSON.
void WriteJsonAtomically(const std::string& path, const nlohmann::json& j) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw InputError{"cannot open " + tmp + " for writing: " + std::strerror(errno)};
    out << j.dump(2) << '\n';
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw InputError{"cannot write " + tmp};
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    throw InputError{"cannot rename " + tmp + " to " + path + ": " + err};
  }
}

std::string OneLine(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

int RunCalibrate(Options& o) {
  if (o.methods.empty()) o.methods = kAvailableMethods;
  if (o.percentile && std::find(o.methods.begin(), o.methods.end(), "percentile") ==
                          o.methods.end()) {
    std::fprintf(stderr, "qkit: warning: --percentile is only used by --method percentile\n");
  }
  qkit::QuantSpec spec = MakeSpec(o);
  try {
    spec.Validate("qkit calibrate");
  } catch (const qkit::Error& e) {
    std::fprintf(stderr, "qkit: %s\n", OneLine(e.what()).c_str());
    return kExitUsage;
  }
  std::vector<FileResult> results;
  for (const std::string& file : o.files) {
    try {
      results.push_back(CalibrateFile(file, o, spec));
    } catch (const InputError& e) {
      std::fprintf(stderr, "qkit: %s: %s\n", file.c_str(), OneLine(e.message).c_str());
      return kExitBadInput;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "qkit: %s: out of memory\n", file.c_str());
      return kExitBadInput;
    } catch (const std::exception& e) {
      // The reader's messages already start with the file name.
      const std::string msg = OneLine(e.what());
      if (msg.rfind(file + ":", 0) == 0) {
        std::fprintf(stderr, "qkit: %s\n", msg.c_str());
      } else {
        std::fprintf(stderr, "qkit: %s: %s\n", file.c_str(), msg.c_str());
      }
      return kExitBadInput;
    }
    if (results.size() > 1) std::printf("\n");
    PrintTable(results.back(), spec);
    std::fflush(stdout);
  }
  if (!o.json_path.empty()) {
    try {
      WriteJsonAtomically(o.json_path, ToJson(results, o, spec));
    } catch (const InputError& e) {
      std::fprintf(stderr, "qkit: %s: %s\n", o.json_path.c_str(), OneLine(e.message).c_str());
      return kExitBadInput;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qkit: quantization toolkit command-line tool"};
  app.require_subcommand(1);
  Options o;
  CLI::App* cal = app.add_subcommand(
      "calibrate", "Calibrate quantization parameters for tensors in .npy files");
  cal->add_option("files", o.files, ".npy files")->required()->type_name("FILE");
  cal->add_option("-m,--method", o.methods,
                  "Method (repeatable): minmax, ema (moving average), histogram-l2, entropy, mse, "
                  "percentile; default: all available in this build")
      ->check(CLI::IsMember(kAllMethods))
      ->expected(1)
      ->allow_extra_args(false)  // one value per --method, so FILEs after it stay positional
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->type_name("METHOD");
  cal->add_option("-b,--bits", o.bits, "Bits per code (2..16)")->check(CLI::Range(2, 16));
  cal->add_flag("--unsigned", o.is_unsigned, "Unsigned range [0, 2^b-1]");
  cal->add_flag("--narrow-range", o.narrow_range, "Signed narrow range [-(2^(b-1)-1), 2^(b-1)-1]");
  cal->add_flag("--affine", o.affine, "Affine (zero point from min) instead of symmetric");
  cal->add_option("--per-channel", o.per_channel_axis, "Per-channel parameters along AXIS")
      ->type_name("AXIS");
  cal->add_option("--percentile", o.percentile, "Percentile for the percentile method")
      ->check(CLI::Range(0.0, 100.0));
  cal->add_option("-j,--threads", o.threads, "Threads")->check(CLI::Range(1, 1024));
  cal->add_option("--batch", o.batch, "Feed the tensor in N chunks along axis 0")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cal->add_option("--json", o.json_path, "Write the results as JSON to PATH (atomically)")
      ->type_name("PATH");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  // A method that is documented but not built is a usage error, not bad input.
  for (const std::string& m : o.methods) {
    if (std::find(kAvailableMethods.begin(), kAvailableMethods.end(), m) ==
        kAvailableMethods.end()) {
      std::fprintf(stderr, "qkit: --method %s is not available in this build (available:", m.c_str());
      for (const std::string& a : kAvailableMethods) std::fprintf(stderr, " %s", a.c_str());
      std::fprintf(stderr, ")\n");
      return kExitUsage;
    }
  }
  std::sort(o.methods.begin(), o.methods.end(), [](const std::string& a, const std::string& b) {
    auto rank = [](const std::string& m) {
      return std::find(kAllMethods.begin(), kAllMethods.end(), m) - kAllMethods.begin();
    };
    return rank(a) < rank(b);
  });
  o.methods.erase(std::unique(o.methods.begin(), o.methods.end()), o.methods.end());
  if (cal->parsed()) return RunCalibrate(o);
  return kExitUsage;
}
