// Execution context: how many threads a call may use. Kernels never read global state.
#ifndef QKIT_CONTEXT_H_
#define QKIT_CONTEXT_H_

#include <cstdint>
#include <string>
#include <vector>

namespace qkit {

// Passed to every op. Results never depend on num_threads (see docs/threading.md): work is
// cut into chunks whose boundaries depend only on the problem size, and partial results are
// combined in chunk order (or are exact, like min/max and integer counts).
struct Context {
  int num_threads = 1;  // >= 1; the torch adapter passes at::get_num_threads()
};

// SIMD targets (Highway) compiled into this build and supported by this CPU, best first,
// as Highway's names ("AVX3", "AVX2", "SSE4", "SSSE3", "SCALAR").
std::vector<std::string> AvailableTargets();

// Restricts runtime dispatch to one target by name (tests and benchmarks), or restores the
// default with an empty name. Throws InvalidArgument for an unknown or unsupported target.
// Not thread-safe: call it while no qkit op is running.
void ForceTarget(const std::string& name);

// Name of the target that dispatch picks now.
std::string CurrentTarget();

}  // namespace qkit

#endif  // QKIT_CONTEXT_H_
