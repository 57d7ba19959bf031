// Memory of the stateless sequence pass (sequence.h), reused from call to call.
//
// A training loop calls the pass with the same sizes at every step; blocks of a few megabytes,
// freed, go back to the system (glibc maps them), and the next call page-faults them in again and
// the kernel zeroes them: about 15% of a layer's backward at (T, B, H) = (25, 32, 128), measured.
// A freed block goes back to a small pool instead, and the next request of that size or less
// takes it. Contents are uninitialised.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <mutex>
#include <utility>
#include <vector>

namespace tbptt {

class ScratchPool {
  public:
    static ScratchPool& instance() {
        static ScratchPool* pool = new ScratchPool();  // never destroyed: blocks may outlive exit
        return *pool;
    }

    // A block of at least `bytes` (aligned like Eigen's packets) and its capacity.
    std::pair<void*, size_t> take(size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            // The smallest free block that fits: same-size requests get their own block back.
            auto best = free_.end();
            for (auto it = free_.begin(); it != free_.end(); ++it)
                if (it->second >= bytes && (best == free_.end() || it->second < best->second))
                    best = it;
            if (best != free_.end()) {
                const std::pair<void*, size_t> block = *best;
                free_.erase(best);
                held_ -= block.second;
                return block;
            }
        }
        return {Eigen::internal::aligned_malloc(std::max<size_t>(bytes, 1)), bytes};
    }

    void give(void* data, size_t bytes) {
        if (!data) return;
        std::lock_guard<std::mutex> lock(mutex_);
        free_.emplace_back(data, bytes);
        held_ += bytes;
        // Keep a few blocks and a bounded amount: drop the oldest beyond it.
        while (free_.size() > kBlocks || held_ > kBytes) {
            held_ -= free_.front().second;
            Eigen::internal::aligned_free(free_.front().first);
            free_.erase(free_.begin());
        }
    }

  private:
    static constexpr size_t kBlocks = 32, kBytes = size_t(512) << 20;
    std::mutex mutex_;
    std::vector<std::pair<void*, size_t>> free_;
    size_t held_ = 0;
};

// n values of T from the pool, returned to it when the handle goes.
template <typename T>
class Scratch {
  public:
    Scratch() = default;
    explicit Scratch(size_t n) {
        if (n == 0) return;  // nothing to hold: no block taken from the pool
        const auto block = ScratchPool::instance().take(n * sizeof(T));
        data_ = static_cast<T*>(block.first), bytes_ = block.second, size_ = n;
    }
    Scratch(Scratch&& other) noexcept { swap(other); }
    Scratch& operator=(Scratch&& other) noexcept {
        Scratch(std::move(other)).swap(*this);
        return *this;
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    ~Scratch() {
        if (data_) ScratchPool::instance().give(data_, bytes_);
    }

    T* data() { return data_; }
    const T* data() const { return data_; }
    size_t size() const { return size_; }
    // Hands the block over (to a NumPy array's owner): the caller gives it back to the pool.
    std::pair<void*, size_t> release() {
        const std::pair<void*, size_t> block{data_, bytes_};
        data_ = nullptr, bytes_ = size_ = 0;
        return block;
    }

  private:
    void swap(Scratch& other) noexcept {
        std::swap(data_, other.data_), std::swap(bytes_, other.bytes_),
            std::swap(size_, other.size_);
    }
    T* data_ = nullptr;
    size_t bytes_ = 0, size_ = 0;
};

}  // namespace tbptt
