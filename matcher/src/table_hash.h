// The tuple-table hash, shared by the writer and every kernel.  `static inline` on purpose:
// each translation unit (each compiled with its own ISA flags) gets a private copy, so the
// linker can never hand one ISA's code to another.
#pragma once

#include <cstdint>

#include "classifier_layout.h"

namespace vpf::matcher::layout {

static inline uint32_t table_hash(const uint32_t* f, const TableView* t) {
  uint32_t h = 0x811c9dc5u ^ t->nfields;
  for (uint32_t j = 0; j < t->nfields; ++j) {
    h ^= f[t->field[j]] & t->mask[j];
    h *= 0x9e3779b1u;
    h = (h << 15) | (h >> 17);
  }
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

}  // namespace vpf::matcher::layout
