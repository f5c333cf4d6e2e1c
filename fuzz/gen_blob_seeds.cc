// Writes the blob_fuzzer seed corpus (real Save() / ToJson() output of each observer, and a
// BlobWriter blob of kind "fuzz") into the directory given as argv[1]. Each file starts with the
// blob_fuzzer selector byte. Run by hand when a state format changes:
//   build-fuzz/fuzz/gen_blob_seeds fuzz/corpus/blob_fuzzer
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "qkit/observers/histogram_calibrator.h"
#include "qkit/observers/histogram_observer.h"
#include "qkit/observers/observers.h"
#include "qkit/serialize.h"

namespace {

std::string dir;

void Write(const std::string& name, uint8_t sel, const void* p, size_t n) {
  std::ofstream f(dir + "/" + name, std::ios::binary);
  f.put(static_cast<char>(sel));
  f.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
}

// Selectors: blob_fuzzer.cc. `json_sel` 0 = sel + 3 (the MinMax / MovingAverage / Passive
// layout).
template <typename Obs>
void Both(const std::string& name, uint8_t sel, const Obs& obs, uint8_t json_sel = 0) {
  const std::vector<uint8_t> blob = obs.Save();
  Write(name + ".blob", sel, blob.data(), blob.size());
  const std::string json = obs.ToJson();
  Write(name + ".json", json_sel ? json_sel : static_cast<uint8_t>(sel + 3), json.data(),
        json.size());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qkit;
  if (argc != 2) return 2;
  dir = argv[1];
  Context ctx;
  float x[12] = {-1.5f, 2.0f, 0.25f, NAN, 3.0f, -0.0f, 1e-40f, INFINITY, 7.0f, -8.0f, 0.5f, 1.0f};
  const TensorView v = TensorView::Contiguous(x, DType::kFloat32, {3, 4});

  Both("minmax_fresh", 0, MinMaxObserver());
  MinMaxObserver mm({ParamLayout::PerChannel(0), NonFinite::kSkip});
  mm.Observe(v, ctx);
  Both("minmax_per_channel", 0, mm);

  MovingAverageObserver ma(MovingAverageObserverOptions::Distiller());
  ma.Observe(v, ctx);
  ma.Observe(v, ctx);
  Both("moving_average_distiller", 1, ma);
  MovingAverageObserver of(MovingAverageObserverOptions::OneFlow(true));
  of.Observe(v, ctx);
  Both("moving_average_oneflow", 1, of);

  PassiveObserver po;
  const float s[1] = {0.05f}, z[1] = {3.0f};
  po.SetQParams(s, z, 1);
  Both("passive", 2, po);

  HistogramObserverOptions ho;
  ho.bins = 16;
  ho.upsample_rate = 4;
  HistogramObserver hist(ho);
  hist.Observe(v, ctx);
  Both("histogram_observer", 7, hist, 8);
  ho.layout = ParamLayout::PerChannel(0);
  HistogramObserver hist_pc(ho);
  hist_pc.Observe(v, ctx);
  Both("histogram_observer_per_channel", 7, hist_pc, 8);

  HistogramCalibratorOptions co;
  co.num_bins = 16;
  HistogramCalibrator calib(co);
  calib.Observe(v, ctx);
  Both("histogram_calibrator", 9, calib, 10);
  co.torch_hist = false;
  co.skip_zeros = true;
  HistogramCalibrator calib_np(co);
  calib_np.Observe(v, ctx);
  Both("histogram_calibrator_numpy", 9, calib_np, 10);

  BlobWriter w("fuzz", 1);
  w.U8(7);
  w.I32(-3);
  w.I64(1 << 20);
  w.F32(1.5f);
  w.F64(-2.5);
  w.Bool(true);
  w.String("qkit");
  const float fa[3] = {1, 2, 3};
  const int64_t ia[2] = {4, 5};
  w.F32Array(fa, 3);
  w.I64Array(ia, 2);
  const std::vector<uint8_t> blob = w.Finish();
  Write("reader.blob", 6, blob.data(), blob.size());
  Write("reader_crc_fixed.blob", 0x86, blob.data(), blob.size());
  return 0;
}
