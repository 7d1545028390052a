// One driver per PCI function: an exclusive lock held while a vscsi-uio drives it.
//
// Two userspace drivers on one device would reset each other's queues. The lock is a flock
// on the function's sysfs `config` file: opening that has no side effects, unlike the uio
// node, whose every close makes uio_pci_generic clear Bus Master Enable (which would stop
// the DMA of the driver that is running). The kernel drops the lock when the process dies.
#pragma once
#include <string>

#include "sysfs.hpp"

namespace vscsi::uio {

class function_lock {
public:
    function_lock() = default;
    ~function_lock() { release(); }
    function_lock(const function_lock&) = delete;
    function_lock& operator=(const function_lock&) = delete;

    // Take the lock, or fail with "the device is in use by another vscsi-uio".
    bool acquire(const host_paths& hp, const std::string& bdf, std::string& err);
    void release();

    // Whether some process holds it now (without keeping it).
    static bool held_elsewhere(const host_paths& hp, const std::string& bdf);

private:
    int fd_ = -1;
};

}  // namespace vscsi::uio
