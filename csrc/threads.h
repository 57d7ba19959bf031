// Threads of the engine. The user sets a maximum (tbptt.set_num_threads); each call into the engine
// then uses, on its own calling thread, as many as its sizes make worthwhile. OpenMP keeps the
// thread count per calling thread and Eigen reads it from there (we never call Eigen::setNbThreads),
// so trainers in different Python threads do not disturb each other.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tbptt {

inline std::atomic<int>& max_threads() {
#ifdef _OPENMP
    static std::atomic<int> n{omp_get_num_procs()};
#else
    static std::atomic<int> n{1};
#endif
    return n;
}

inline void set_max_threads(int n) { max_threads() = std::max(1, n); }

// Below about a thousand state values per step (B x H), forking costs more than it saves: the
// per-step products are tiny and Eigen would still split the window's products over threads.
inline int threads_for(int B, int H) {
    return int64_t(B) * H < 1024 ? 1 : max_threads().load();
}

// Sets the calling thread's OpenMP thread count for the scope of one engine call.
class ThreadScope {
  public:
    explicit ThreadScope(int threads) {
#ifdef _OPENMP
        previous_ = omp_get_max_threads();
        omp_set_num_threads(threads);
#else
        (void)threads;
#endif
    }
    ~ThreadScope() {
#ifdef _OPENMP
        omp_set_num_threads(previous_);
#endif
    }
    ThreadScope(const ThreadScope&) = delete;
    ThreadScope& operator=(const ThreadScope&) = delete;

  private:
    int previous_ = 1;
};

}  // namespace tbptt
