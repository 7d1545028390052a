#include "vfio_irq.hpp"

#include <errno.h>
#include <linux/vfio.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace vscsi::vfio {

bool interrupts::open_eventfds(uint32_t n, std::string& err) {
    for (uint32_t i = 0; i < n; ++i) {
        const int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            err = std::string("cannot create an eventfd: ") + strerror(errno);
            return false;
        }
        fds_.push_back(fd);
        pfds_.push_back(pollfd{fd, POLLIN, 0});
    }
    counts_.assign(n, 0);
    return true;
}

bool interrupts::open_msix(device& d, uint16_t virtqueues, std::string& err) {
    close();
    const uint32_t table = d.irq_count(VFIO_PCI_MSIX_IRQ_INDEX);
    if (table == 0) {
        err = "the function has no MSI-X";
        return false;
    }
    const uint32_t want = 1u + virtqueues;  // configuration changes, then one per virtqueue
    per_queue_ = table >= want;
    const uint32_t n = per_queue_ ? want : table >= 2 ? 2 : 1;
    if (!open_eventfds(n, err) || !d.set_irq_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, fds_.data(), n, err)) {
        close();
        return false;
    }
    dev_ = &d;
    kind_ = kind::msix;
    return true;
}

bool interrupts::open_intx(device& d, std::string& err) {
    close();
    if (d.irq_count(VFIO_PCI_INTX_IRQ_INDEX) == 0) {
        err = "the function has neither MSI-X nor an INTx line";
        return false;
    }
    if (!open_eventfds(1, err) || !d.set_irq_eventfds(VFIO_PCI_INTX_IRQ_INDEX, fds_.data(), 1, err)) {
        close();
        return false;
    }
    dev_ = &d;
    kind_ = kind::intx;
    return true;
}

void interrupts::close() {
    // Off at the device first: no interrupt may name an eventfd that is gone.
    if (dev_) dev_->disable_irqs(kind_ == kind::msix ? VFIO_PCI_MSIX_IRQ_INDEX : VFIO_PCI_INTX_IRQ_INDEX);
    for (int fd : fds_) ::close(fd);
    fds_.clear();
    pfds_.clear();
    counts_.clear();
    dev_ = nullptr;
    kind_ = kind::none;
    per_queue_ = false;
}

void interrupts::drain(uint16_t vector) {
    uint64_t n = 0;
    if (read(fds_[vector], &n, sizeof n) == ssize_t(sizeof n)) counts_[vector] += n;
}

int interrupts::wait_any(int timeout_ms) {
    if (fds_.empty()) return -1;
    int r;
    do {
        r = poll(pfds_.data(), nfds_t(pfds_.size()), timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return r;
    for (size_t i = 0; i < pfds_.size(); ++i)
        if (pfds_[i].revents & POLLIN) drain(uint16_t(i));
    return r;
}

int interrupts::wait_one(uint16_t vector, int timeout_ms) {
    if (vector >= fds_.size()) return -1;
    pollfd p{fds_[vector], POLLIN, 0};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return r;
    drain(vector);
    return 1;
}

}  // namespace vscsi::vfio
