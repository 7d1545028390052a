#include "uio_irq.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

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
    return 1;
}

bool uio_irq::unmask() {
    const int32_t one = 1;
    return fd_ >= 0 && write(fd_, &one, sizeof one) == ssize_t(sizeof one);
}

}  // namespace vscsi::uio
