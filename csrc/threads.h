// Threads of the engine. The user sets a maximum (tbptt.set_num_threads); each call into the engine
// then uses, on its own calling thread, at most that many. OpenMP keeps the thread count per
// calling thread, so trainers in different Python threads do not disturb each other. Eigen never
// threads by itself (EIGEN_DONT_PARALLELIZE): every parallel loop is one of ours.
//
// Results do not depend on the thread count. Work is cut into pieces fixed by the problem's sizes
// alone (never by the number of threads), each piece is computed by one thread in one fixed order,
// and partial sums are combined in piece order. Threads take pieces as they become free
// (schedule(dynamic)), so a thread that the OS holds back for a while does less of the work. And
// since the bits are the same, the engine can pick the thread count per update from measured
// speed (ThreadTuner) without changing a run's results.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
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

inline void set_max_threads(int n) {
    max_threads() = std::max(1, n);
}

// Below about a thousand state values per step (B x H), forking costs more than it saves.
inline int threads_for(int B, int H) {
    return int64_t(B) * H < 1024 ? 1 : max_threads().load();
}

inline int current_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline void use_threads(int threads) {
#ifdef _OPENMP
    omp_set_num_threads(std::max(1, threads));
#else
    (void)threads;
#endif
}

// body(begin, end) for the pieces [0, size), [size, 2 size), ... of [0, n), shared among the calling
// thread's OpenMP threads as they become free. The pieces depend on n and size only.
// (Serial work never enters an OpenMP construct: even one with a false `if` costs a microsecond,
// which one-stream updates of a small model would pay many times per step.)
template <typename F>
void for_pieces(int64_t n, int64_t size, F&& body) {
    const int64_t pieces = (n + size - 1) / size;
    if (pieces > 1 && current_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t p = 0; p < pieces; ++p) body(p, p * size, std::min(n, (p + 1) * size));
        return;
    }
    for (int64_t p = 0; p < pieces; ++p) body(p, p * size, std::min(n, (p + 1) * size));
}

// Rows per piece for a product of n rows of `work` multiply-adds each: pieces of `rows`, or one
// piece when the whole product is too small to be worth sharing.
inline int64_t piece_rows(int64_t n, int64_t work, int64_t rows = 64) {
    return n * work < (int64_t(1) << 17) ? std::max<int64_t>(n, 1) : rows;
}

// Streams never interact inside a layer: a run's forward (and a block's backward) goes piece by
// piece of streams, each piece running every step for its own rows: one fork per run, and a
// piece's small recurrent products stay in its thread's cache. The pieces depend on B and H only:
// pieces of 8 streams or more keep the per-step products efficient (packed_gemm.h), and up to 8
// of them let the threads share a run unevenly when the OS holds one back.
inline int stream_piece(int B, int H) {
    if (int64_t(B) * H < 1024) return B;  // too little work per step to share
    return std::min(B, std::max(8, (B + 7) / 8));
}

inline int stream_pieces(int B, int H) {
    const int piece = stream_piece(B, H);
    return (B + piece - 1) / piece;
}

// body(piece, b0, b1) for streams [b0, b1) of each piece.
template <typename F>
void for_stream_pieces(int B, int H, F&& body) {
    for_pieces(B, stream_piece(B, H),
               [&](int64_t piece, int64_t b0, int64_t b1) { body(int(piece), int(b0), int(b1)); });
}

// Sets the calling thread's OpenMP thread count for the scope of one engine call.
class ThreadScope {
  public:
    explicit ThreadScope(int threads) : previous_(current_threads()) { use_threads(threads); }
    ~ThreadScope() { use_threads(previous_); }
    ThreadScope(const ThreadScope&) = delete;
    ThreadScope& operator=(const ThreadScope&) = delete;

  private:
    int previous_;
};

// Picks, for each stretch of an engine's work (a run of steps and its update), one thread or all
// it may use, from the measured time per step of each. On an idle machine all threads win; when
// another process keeps a core busy, every join waits for a thread the OS has set aside, and one
// thread wins. The choice not in use is tried again now and then, for up to 3 stretches (cut
// short as soon as it is clearly slower): after 2 stretches, then 4 times less often each time it
// loses (every 256 stretches at most), and never before the current choice has run 32 times as
// long as the last losing trial took. So a change in the machine's load is followed within a few
// seconds, and trying a choice that loses costs about 3% at most.
class ThreadTuner {
  public:
    // Runs body(), a stretch of `steps` steps, on the thread count chosen for it, timed when the
    // choice may change (most > 1). The caller's schedule stays the caller's: the tuner only
    // wraps each stretch of it.
    template <typename F>
    void run(int most, int steps, F&& body) {
        const int used = choose(most);
        use_threads(used);
        if (most <= 1) return body();
        using Clock = std::chrono::steady_clock;
        const auto start = Clock::now();
        body();
        record(used, std::chrono::duration<double>(Clock::now() - start).count(), steps);
    }

    // The thread count for the next stretch, given the most the call may use.
    int choose(int most) const { return threads(trying_ ? 1 - current_ : current_, most); }

    // The thread count in use, for work outside the measured stretches.
    int current(int most) const { return threads(current_, most); }

    // A stretch of `steps` steps took `seconds` with `threads` threads.
    void record(int threads, double seconds, int steps) {
        if (!(seconds >= 0.0) || steps <= 0) return;
        const int choice = threads > 1 ? 1 : 0;
        Tally& tally = tally_[choice];
        tally.seconds += seconds, tally.steps += steps, ++tally.stretches;
        if (trying_) {
            if (choice != current_ &&
                (tally.stretches >= kTrial || tally.per_step() > 1.5 * tally_[current_].per_step()))
                decide();
        } else if (++since_ >= period_ && tally.seconds >= wait_seconds_) {
            trying_ = true;
            tally_[1 - current_] = Tally{};
        }
    }

  private:
    static constexpr int kTrial = 3, kLongest = 256;
    struct Tally {
        double seconds = 0.0;
        int64_t steps = 0, stretches = 0;
        double per_step() const { return steps ? seconds / double(steps) : 0.0; }
    };

    static int threads(int choice, int most) { return choice == 0 || most <= 1 ? 1 : most; }

    void decide() {
        const Tally& trial = tally_[1 - current_];
        const bool better = trial.per_step() < tally_[current_].per_step();
        period_ = better ? 4 : std::min(4 * period_, kLongest);
        wait_seconds_ = better ? 0.0 : 32.0 * trial.seconds;
        if (better) current_ = 1 - current_;
        tally_[0] = tally_[1] = Tally{};
        trying_ = false, since_ = 0;
    }

    Tally tally_[2];   // one thread, all threads: since the choice was last made
    int current_ = 1;  // start with all threads
    bool trying_ = false;
    int since_ = 0, period_ = 2;
    double wait_seconds_ = 0.0;
};

}  // namespace tbptt
