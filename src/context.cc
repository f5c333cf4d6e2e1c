// SIMD target listing and forcing (for tests and benchmarks).
#include <hwy/targets.h>

#include "internal/check.h"
#include "qkit/context.h"

namespace qkit {

std::vector<std::string> AvailableTargets() {
  std::vector<std::string> names;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) names.emplace_back(hwy::TargetName(t));
  return names;
}

void ForceTarget(const std::string& name) {
  if (name.empty()) {
    hwy::SetSupportedTargetsForTest(0);
    return;
  }
  hwy::SetSupportedTargetsForTest(0);
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
    if (name == hwy::TargetName(t)) {
      hwy::SetSupportedTargetsForTest(t);
      return;
    }
  }
  QKIT_FAIL(InvalidArgument, "qkit::ForceTarget: target `" << name
                                 << "` is not compiled in or not supported by this CPU");
}

std::string CurrentTarget() {
  const auto targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? "none" : hwy::TargetName(targets.front());
}

}  // namespace qkit
