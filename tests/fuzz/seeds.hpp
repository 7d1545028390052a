// Seed writing: each target can write its starting corpus (the unit tests' scenarios in the
// target's action language) and exit, when run as
//
//   VSCSI_FUZZ_WRITE_SEEDS=<dir> <target binary>
//
// The committed corpus starts from these and is minimised with -merge=1.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <string>
#include <utility>
#include <vector>

namespace fuzz {

using named_seed = std::pair<std::string, std::vector<uint8_t>>;

inline void write_seeds_if_asked(const std::vector<named_seed>& seeds) {
    const char* dir = getenv("VSCSI_FUZZ_WRITE_SEEDS");
    if (!dir || !*dir) return;
    for (const named_seed& s : seeds) {
        const std::string path = std::string(dir) + "/seed-" + s.first;
        FILE* f = fopen(path.c_str(), "wb");
        if (!f || fwrite(s.second.data(), 1, s.second.size(), f) != s.second.size() || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", path.c_str());
            exit(1);
        }
    }
    fprintf(stderr, "wrote %zu seeds to %s\n", seeds.size(), dir);
    exit(0);
}

}  // namespace fuzz
