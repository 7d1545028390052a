#include "function_lock.hpp"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

namespace vscsi::uio {

bool function_lock::acquire(const host_paths& hp, const std::string& bdf, std::string& err) {
    release();
    const std::string path = hp.pci_function(bdf) + "/config";
    fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
        err = "cannot open " + path + ": " + strerror(errno);
        return false;
    }
    if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        err = errno == EWOULDBLOCK ? bdf + " is in use by another vscsi-uio" : "cannot lock " + path + ": " + strerror(errno);
        release();
        return false;
    }
    return true;
}

void function_lock::release() {
    if (fd_ >= 0) close(fd_);  // closing drops the lock
    fd_ = -1;
}

bool function_lock::held_elsewhere(const host_paths& hp, const std::string& bdf) {
    function_lock probe;
    std::string err;
    if (probe.acquire(hp, bdf, err)) return false;
    return err.find("in use") != std::string::npos;
}

}  // namespace vscsi::uio
