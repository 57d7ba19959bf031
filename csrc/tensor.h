// Row-major Eigen views over raw buffers, shared by every kernel of the core.
// The core owns no Python objects: it reads and writes plain arrays through these maps.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <vector>

namespace tbptt {

template <typename T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatrixMap = Eigen::Map<Matrix<T>>;
template <typename T>
using ConstMatrixMap = Eigen::Map<const Matrix<T>>;
template <typename T>
using VectorMap = Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>;  // a row vector
template <typename T>
using ConstVectorMap = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>;

// Every buffer of the engine: aligned like Eigen's packets, so vectorised loops split the same way
// whatever address malloc returns, and identical runs give identical bits.
template <typename T>
using Buffer = std::vector<T, Eigen::aligned_allocator<T>>;

}  // namespace tbptt
