// A thread that runs on one CPU from its first instruction: its creator sets the affinity in
// the attributes the thread is created with. A thread that pins itself starts wherever the
// scheduler puts it, and under SCHED_FIFO, with its creator spinning on that CPU, it may never
// run to move itself (benchmarks run under chrt -f).
#pragma once
#include <pthread.h>
#include <sched.h>

#include <functional>
#include <utility>

namespace vscsi::loopback {

class pinned_thread {
public:
    pinned_thread() = default;
    ~pinned_thread() { join(); }
    pinned_thread(const pinned_thread&) = delete;
    pinned_thread& operator=(const pinned_thread&) = delete;

    // cpu < 0: anywhere. A CPU the machine lacks falls back to anywhere (best effort).
    // False if no thread could be created.
    bool start(int cpu, std::function<void()> fn) {
        if (running_) return false;
        fn_ = std::move(fn);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        bool ok = false;
        if (cpu >= 0 && cpu < CPU_SETSIZE) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            ok = pthread_attr_setaffinity_np(&attr, sizeof(set), &set) == 0 &&
                 pthread_create(&thread_, &attr, run, this) == 0;
        }
        if (!ok) ok = pthread_create(&thread_, nullptr, run, this) == 0;
        pthread_attr_destroy(&attr);
        running_ = ok;
        return ok;
    }

    void join() {
        if (!running_) return;
        pthread_join(thread_, nullptr);
        running_ = false;
    }

private:
    static void* run(void* self) {
        static_cast<pinned_thread*>(self)->fn_();
        return nullptr;
    }

    pthread_t thread_{};
    bool running_ = false;
    std::function<void()> fn_;
};

}  // namespace vscsi::loopback
