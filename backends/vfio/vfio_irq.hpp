// Interrupts of a vfio function, delivered to eventfds.
//
// MSI-X (the way a virtio device is meant to interrupt): vector 0 for configuration changes
// and one vector per virtqueue (virtqueue i on vector 1 + i), so a waiter learns which queue
// has work without reading anything from the device, and a thread that owns one queue sleeps
// on that queue's vector alone. A table too small for that shares: configuration on vector 0
// and every queue on vector 1 (or everything on 0 with a one-entry table).
//
// INTx, for functions without MSI-X: one eventfd. The kernel masks the line each time it
// fires; the driver acknowledges the device (reads its ISR, which lowers the line) and then
// unmasks it here.
#pragma once
#include <poll.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "vfio_device.hpp"

namespace vscsi::vfio {

class interrupts {
public:
    enum class kind : uint8_t { none, msix, intx };

    interrupts() = default;
    ~interrupts() { close(); }
    interrupts(const interrupts&) = delete;
    interrupts& operator=(const interrupts&) = delete;

    // MSI-X vectors for `virtqueues` virtqueues (control, event and the request queues); with
    // 0, one vector only, for a driver that wants MSI-X on but no interrupt (every vector it
    // writes is NO_VECTOR). Fails when the function has no MSI-X.
    bool open_msix(device& d, uint16_t virtqueues, std::string& err);
    bool open_intx(device& d, std::string& err);
    void close();

    kind mode() const { return kind_; }
    // One vector per virtqueue (not shared).
    bool per_queue() const { return per_queue_; }
    uint16_t vectors() const { return uint16_t(fds_.size()); }
    static constexpr uint16_t config_vector = 0;
    uint16_t queue_vector(uint16_t virtqueue) const {
        if (per_queue_) return uint16_t(1 + virtqueue);
        return fds_.size() > 1 ? 1 : 0;
    }

    // Sleep until any vector fires or `timeout_ms` passes (-1: forever). Consumes what fired.
    // Returns the number of vectors that fired, 0 on timeout, -1 on error.
    int wait_any(int timeout_ms);
    // The same for one vector only (the queue a thread owns).
    int wait_one(uint16_t vector, int timeout_ms);
    // Interrupts seen on a vector so far (the eventfd counts every one, even those that came
    // while nobody waited).
    uint64_t count(uint16_t vector) const { return vector < counts_.size() ? counts_[vector] : 0; }

    // INTx only: let the line interrupt again (after the device was acknowledged).
    bool unmask() { return kind_ == kind::intx && dev_ && dev_->unmask_intx(); }

private:
    bool open_eventfds(uint32_t n, std::string& err);
    void drain(uint16_t vector);

    device* dev_ = nullptr;
    kind kind_ = kind::none;
    bool per_queue_ = false;
    std::vector<int> fds_;
    std::vector<pollfd> pfds_;  // the same, ready for poll(): no allocation per wait
    std::vector<uint64_t> counts_;
};

}  // namespace vscsi::vfio
