#include "uio_irq.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include <vscsi/pci.hpp>

namespace vscsi::uio {

bool uio_irq::open(const std::string& dev_node, std::string& err) {
    close();
    fd_ = ::open(dev_node.c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) {
        err = "cannot open " + dev_node + ": " + strerror(errno);
        return false;
    }
    return true;
}

void uio_irq::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

int uio_irq::wait(int timeout_ms) {
    if (fd_ < 0) return -1;
    pollfd p{fd_, POLLIN, 0};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return r;
    uint32_t n = 0;
    if (read(fd_, &n, sizeof n) != ssize_t(sizeof n)) return -1;
    count_ = n;
    ++wakeups_;
    return 1;
}

bool uio_irq::attach(bar_bus& bus) {
    bus_ = &bus;
    const uint16_t cmd = bus.config_read16(pci_cfg::command);
    if (cmd == 0xffff) return false;
    command_ = uint16_t(cmd & ~pci_cfg::command_intx_disable);
    return true;
}

bool uio_irq::unmask() {
    // While this runs INTx is masked (the handler masked it, or nothing was pending), so the
    // kernel's handler cannot be changing the register at the same time.
    return bus_ && bus_->config_write16(pci_cfg::command, command_);
}

}  // namespace vscsi::uio
