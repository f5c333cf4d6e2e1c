// The only threading primitive in qkit (implemented with OpenMP in parallel.cc, the only
// OpenMP user). Chunk boundaries depend on the problem size and a grain only, never on the
// thread count, so chunk-ordered merges give identical results for any thread count.
#ifndef QKIT_INTERNAL_PARALLEL_H_
#define QKIT_INTERNAL_PARALLEL_H_

#include <cstdint>
#include <exception>
#include <type_traits>
#include <utility>

namespace qkit::internal {

// Elements per chunk for streaming kernels: 64K floats = 256 KiB, a multiple of 64 so that a
// chunk owns whole bytes (and 64-bit words) of a bit-packed mask.
inline constexpr int64_t kGrain = int64_t{1} << 16;

inline int64_t NumChunks(int64_t n, int64_t grain) { return n <= 0 ? 0 : (n + grain - 1) / grain; }

// Number of threads ParallelFor will use for `num_chunks` chunks with `requested` threads.
int EffectiveThreads(int64_t num_chunks, int requested);

// Minimal non-owning callable reference.
template <class Sig>
class FunctionRef;
template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT: implicit by design
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, Args... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(a)...);
        }) {}
  R operator()(Args... a) const { return call_(obj_, std::forward<Args>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

// Runs fn(chunk, thread) for every chunk in [0, num_chunks) on EffectiveThreads(...) threads
// (thread in [0, that count)). Chunks are handed out statically in order. An exception thrown
// by fn is rethrown on the calling thread after all threads finish (the first one wins).
void ParallelFor(int64_t num_chunks, int num_threads, FunctionRef<void(int64_t, int)> fn);

}  // namespace qkit::internal

#endif  // QKIT_INTERNAL_PARALLEL_H_
