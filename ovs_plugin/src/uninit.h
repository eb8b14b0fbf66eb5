// Uninit<T, N>: N objects of T left uninitialised, for a datapath thread's per-batch arrays
// (T's member initialisers would cost a `rep stos` of a kilobyte per batch); every element
// is written before it is read.
#pragma once

#include <cstddef>

namespace vpf::plugin {

template <class T, size_t N>
union Uninit {
  Uninit() {}
  T v[N];
};

}  // namespace vpf::plugin
