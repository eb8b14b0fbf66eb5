// A mutex whose users clang's thread-safety analysis checks (-Wthread-safety), as OVS checks
// its ovs_mutex with OVS_GUARDED_BY / OVS_REQUIRES.
//
// Declare shared state with VPF_GUARDED_BY(mu), functions that expect the lock held with
// VPF_REQUIRES(mu) and functions that take it with VPF_EXCLUDES(mu); lock with
// vpf::MutexLock.  Under GCC the annotations are empty and vpf::Mutex is a std::mutex.
// scripts/thread_safety.sh compiles the annotated sources with clang and the analysis as
// errors (CTest: thread_safety).
#pragma once

#include <mutex>

#if defined(__clang__)
#define VPF_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define VPF_THREAD_ANNOTATION(x)
#endif

#define VPF_CAPABILITY(name) VPF_THREAD_ANNOTATION(capability(name))
#define VPF_SCOPED_CAPABILITY VPF_THREAD_ANNOTATION(scoped_lockable)
#define VPF_GUARDED_BY(mu) VPF_THREAD_ANNOTATION(guarded_by(mu))
#define VPF_PT_GUARDED_BY(mu) VPF_THREAD_ANNOTATION(pt_guarded_by(mu))
#define VPF_REQUIRES(...) VPF_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define VPF_EXCLUDES(...) VPF_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define VPF_ACQUIRE(...) VPF_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define VPF_RELEASE(...) VPF_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define VPF_TRY_ACQUIRE(...) VPF_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define VPF_ACQUIRED_BEFORE(...) VPF_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define VPF_NO_THREAD_SAFETY_ANALYSIS VPF_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace vpf {

class VPF_CAPABILITY("mutex") Mutex {
 public:
  void lock() VPF_ACQUIRE() { mu_.lock(); }
  void unlock() VPF_RELEASE() { mu_.unlock(); }
  bool try_lock() VPF_TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope.  Also BasicLockable itself, for std::condition_variable_any
// (whose wait unlocks and relocks it).
class VPF_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) VPF_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() VPF_RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void lock() VPF_NO_THREAD_SAFETY_ANALYSIS { mu_.lock(); }
  void unlock() VPF_NO_THREAD_SAFETY_ANALYSIS { mu_.unlock(); }

 private:
  Mutex& mu_;
};

}  // namespace vpf
