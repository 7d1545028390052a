#include "sysfs.hpp"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace vscsi::uio {

namespace {
void set_err(std::string* err, const std::string& what, const std::string& path) {
    if (err) *err = what + " " + path + ": " + strerror(errno);
}
}  // namespace

bool read_file(const std::string& path, std::string& out, std::string* err) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, "cannot open", path);
        return false;
    }
    out.clear();
    char buf[4096];
    for (;;) {
        const ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            set_err(err, "cannot read", path);
            close(fd);
            return false;
        }
        if (n == 0) break;
        out.append(buf, size_t(n));
    }
    close(fd);
    return true;
}

std::string read_line(const std::string& path) {
    std::string s;
    if (!read_file(path, s)) return {};
    const size_t nl = s.find('\n');
    if (nl != std::string::npos) s.resize(nl);
    return s;
}

bool write_file(const std::string& path, const std::string& text, std::string* err) {
    // O_TRUNC as a shell redirection does: sysfs ignores it, a regular file (tests) needs it.
    const int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, "cannot open", path);
        return false;
    }
    const ssize_t n = write(fd, text.data(), text.size());
    if (n != ssize_t(text.size())) {
        if (n >= 0) errno = EIO;
        set_err(err, "cannot write '" + text.substr(0, text.find('\n')) + "' to", path);
        close(fd);
        return false;
    }
    close(fd);
    return true;
}

bool read_number(const std::string& path, uint64_t& out) {
    const std::string s = read_line(path);
    if (s.empty()) return false;
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = strtoull(s.c_str(), &end, 0);
    if (errno || end == s.c_str()) return false;
    out = v;
    return true;
}

std::vector<std::string> list_dir(const std::string& path) {
    std::vector<std::string> names;
    DIR* d = opendir(path.c_str());
    if (!d) return names;
    while (const dirent* e = readdir(d)) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        names.emplace_back(e->d_name);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

bool exists(const std::string& path) {
    struct stat st;
    return lstat(path.c_str(), &st) == 0;
}

std::string link_name(const std::string& path) {
    char buf[PATH_MAX];
    const ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
    if (n <= 0) return {};
    buf[n] = 0;
    const char* slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}

std::string resolve(const std::string& path) {
    char buf[PATH_MAX];
    if (!realpath(path.c_str(), buf)) return {};
    return buf;
}

}  // namespace vscsi::uio
