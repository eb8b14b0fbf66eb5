// Compiled by the thread_safety_catches test, which expects clang's analysis to refuse it:
// proof that scripts/thread_safety.sh's check would see an unguarded access.
#include "vpf/mutex.h"

struct Counter {
  vpf::Mutex mu;
  int value VPF_GUARDED_BY(mu) = 0;
  void add() { ++value; }  // not under mu: the analysis must report it
};

int main() {
  Counter c;
  c.add();
  vpf::MutexLock l(c.mu);
  return c.value;
}
