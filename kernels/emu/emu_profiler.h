// emu_profiler.h: what a kernel would cost on a GPU, measured while the emulator runs it
// (docs/DESIGN.md section 8, `dml profile`). Part of emu_runtime.cpp in the EMU_PROFILE build only.
//
// The kernels of that build are compiled with GCC's ThreadSanitizer instrumentation, which calls
// __tsan_readN/__tsan_writeN(address) before every load and store the optimised code still makes
// to memory. Those hooks are defined here (no sanitizer runtime is linked). Each access is
// classified by address and, unless it is not counted, logged per thread with its instruction
// (the hook's return address):
//   global:      inside a buffer the launch was given;
//   shared:      the block's dynamic shared memory, or the calling thread's static TLS block,
//                where `__shared__` variables live (cuda_emu.h) and nothing else a kernel touches
//                does, bar the emulator's own variables;
//   not counted: the thread's own fiber stack (registers and local memory on a GPU) and the
//                emulator's own state (threadIdx, the lane exchange slots);
//   anything else is counted as unclassified (the known-answer tests require none).
//
// Warp-level accesses. Between two scheduling rounds every thread of a block has run up to the
// same barrier, so the logs hold the same stretch of the program for every lane. The k-th
// execution of one instruction by the lanes of a warp is one warp-level access, as when a GPU
// warp issues that instruction with the lanes that reached it active; lanes that skipped it
// (a branch, or a lane that had exited) make it a divergent access. From each warp-level access:
//   global: the 32-byte sectors touched against the fewest that could carry the distinct bytes
//           requested (coalescing efficiency); every sector is L2 traffic, and a sector's first
//           touch in the launch is DRAM traffic (the whole launch fits in a 50 MB L2 at the sizes
//           profiled; a launch whose footprint does not is flagged, its DRAM figure a lower bound);
//   shared: 32 banks of 4 bytes; a request of w-byte words is served in phases of 128/w lanes
//           and each phase takes as many wavefronts as the most distinct words any one bank holds
//           (lanes reading the same word share it): conflicts are wavefronts beyond one a phase.
// Each buffer is placed at a 256-byte aligned base of its own, as cudaMalloc aligns, so sector
// counts are the GPU's whatever alignment malloc gave the host copy.
//
// Profiled launches are serialised by one process-wide mutex and run on the calling thread only,
// which keeps the counts deterministic and the static shared memory in one thread's TLS.
#pragma once

#include <link.h>

#include <map>
#include <unordered_map>
#include <unordered_set>

// (Included by emu_runtime.cpp inside namespace emu, after the Runner it observes.)

// A buffer a launch may read or write (src/device/emu.rs passes one per pointer argument).
struct ProfileRange {
    uint64_t begin;
    uint64_t bytes;
};

// Totals of one launch; mirrored field by field by EmuProfileStats in src/device/emu.rs.
struct ProfileStats {
    uint64_t global_load_requests, global_store_requests;
    uint64_t global_load_bytes, global_store_bytes;
    uint64_t global_load_sectors, global_store_sectors;
    uint64_t global_load_min_sectors, global_store_min_sectors;
    uint64_t dram_read_sectors, dram_write_sectors;
    uint64_t shared_load_requests, shared_store_requests;
    uint64_t shared_wavefronts, shared_ideal_wavefronts, shared_max_ways;
    uint64_t warp_accesses, divergent_warp_accesses;
    uint64_t simt_flops, tensor_flops, bf16_tensor_flops;  // bf16_tensor_flops: part of tensor_flops
    uint64_t atomics, block_barriers, warp_barriers;
    uint64_t unclassified_accesses;
};

namespace profile {

constexpr uint64_t SECTOR_BYTES = 32;
constexpr uint64_t BUFFER_ALIGNMENT = 256;
constexpr unsigned SHARED_BANKS = 32;
constexpr unsigned SHARED_PHASE_BYTES = 128;

enum class Space : uint8_t { Global, Shared };

struct Access {
    uintptr_t site;
    uintptr_t addr;  // global: the buffer's model base plus the offset in it
    uint32_t bytes;
    Space space;
    bool store;
};

// A launch's buffer and where the profiler places it: a 256-aligned base of its own (shared by
// arguments that are the same buffer), far from every other buffer's.
struct GlobalBuffer {
    uintptr_t begin;
    uint64_t bytes;
    uintptr_t model_base;
};

struct State {
    bool active = false;
    std::vector<GlobalBuffer> globals;
    ProfileStats stats{};
    std::unordered_set<uint64_t> read_sectors, write_sectors;
    std::vector<std::vector<Access>> logs;  // per thread of the running block
    uintptr_t dynamic_begin = 0, dynamic_end = 0;
    uintptr_t tls_begin = 0, tls_end = 0;  // this build's static TLS block on the calling thread
};

State state;
std::mutex launch_mutex;

bool within(uintptr_t a, const void* begin, size_t bytes) {
    uintptr_t b = reinterpret_cast<uintptr_t>(begin);
    return a >= b && a - b < bytes;
}

// The emulator's own state that instrumented code reads (threadIdx, lane exchange slots).
bool bookkeeping(uintptr_t a, const Runner& r) {
    return within(a, r.fibers.data(), r.fibers.size() * sizeof(Fiber)) ||
           within(a, r.warp_slots.data(), r.warp_slots.size() * sizeof(uint64_t)) ||
           within(a, &current_thread, sizeof current_thread) || within(a, &current_block, sizeof current_block) ||
           within(a, &runner, sizeof runner);
}

void log_access(uintptr_t site, const void* p, unsigned bytes, bool store) {
    if (!state.active || runner == nullptr || runner->running == nullptr) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const Fiber& f = *runner->running;
    Access acc{site, a, bytes, Space::Shared, store};
    if (within(a, f.stack, stack_bytes())) {
        return;  // the thread's own stack: registers and local memory on a GPU
    } else if (bookkeeping(a, *runner)) {
        return;
    } else if ((a >= state.tls_begin && a < state.tls_end) || (a >= state.dynamic_begin && a < state.dynamic_end)) {
        acc.space = Space::Shared;
    } else {
        const GlobalBuffer* buffer = nullptr;
        for (const GlobalBuffer& g : state.globals)
            if (within(a, reinterpret_cast<const void*>(g.begin), g.bytes)) {
                buffer = &g;
                break;
            }
        if (buffer == nullptr) {
            ++state.stats.unclassified_accesses;
            return;
        }
        acc.space = Space::Global;
        acc.addr = buffer->model_base + (a - buffer->begin);
    }
    state.logs[f.ts.linear].push_back(acc);
}

// The calling thread's copy of the TLS segment of the module this code is in (the one holding
// `current_thread`): dl_iterate_phdr gives each module's segment size and this thread's copy.
bool find_tls_block() {
    struct Search {
        uintptr_t probe, begin = 0, end = 0;
    } search{reinterpret_cast<uintptr_t>(&current_thread)};
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* data) {
            auto* s = static_cast<Search*>(data);
            if (info->dlpi_tls_data == nullptr) return 0;
            for (int i = 0; i < info->dlpi_phnum; ++i) {
                const ElfW(Phdr)& ph = info->dlpi_phdr[i];
                if (ph.p_type != PT_TLS) continue;
                const uintptr_t begin = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
                if (s->probe >= begin && s->probe - begin < ph.p_memsz) {
                    s->begin = begin, s->end = begin + ph.p_memsz;
                    return 1;
                }
            }
            return 0;
        },
        &search);
    state.tls_begin = search.begin, state.tls_end = search.end;
    return search.end != 0;
}

// One warp-level access: the lanes that executed it and what each touched.
struct WarpAccess {
    Space space;
    bool store;
    std::vector<std::pair<unsigned, Access>> lanes;
};

// Sorted distinct values.
template <class T>
void sort_unique(std::vector<T>& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
}

void count_global(const WarpAccess& w) {
    ProfileStats& s = state.stats;
    std::vector<uint64_t> sectors, addresses;
    uint64_t requested = 0;
    for (const auto& [lane, a] : w.lanes) {
        for (uint64_t sector = a.addr / SECTOR_BYTES; sector <= (a.addr + a.bytes - 1) / SECTOR_BYTES; ++sector)
            sectors.push_back(sector);
        addresses.push_back(a.addr);
        requested += a.bytes;
    }
    sort_unique(sectors);
    sort_unique(addresses);  // lanes reading one address are served by one transfer
    const uint64_t distinct_bytes = addresses.size() * w.lanes.front().second.bytes;
    const uint64_t min_sectors = (distinct_bytes + SECTOR_BYTES - 1) / SECTOR_BYTES;
    auto& first_touch = w.store ? state.write_sectors : state.read_sectors;
    for (uint64_t sector : sectors) first_touch.insert(sector);
    if (w.store) {
        ++s.global_store_requests, s.global_store_bytes += requested;
        s.global_store_sectors += sectors.size(), s.global_store_min_sectors += min_sectors;
    } else {
        ++s.global_load_requests, s.global_load_bytes += requested;
        s.global_load_sectors += sectors.size(), s.global_load_min_sectors += min_sectors;
    }
}

void count_shared(const WarpAccess& w) {
    ProfileStats& s = state.stats;
    const unsigned word = std::max<unsigned>(4, w.lanes.front().second.bytes);
    const unsigned lanes_per_phase = std::max(1u, SHARED_PHASE_BYTES / word);
    // (phase, bank, 4-byte word) of every word requested; lanes are at most 32, so phases too.
    std::vector<std::tuple<unsigned, unsigned, uintptr_t>> words;
    for (const auto& [lane, a] : w.lanes)
        for (uintptr_t b = a.addr / 4; b <= (a.addr + a.bytes - 1) / 4; ++b)
            words.emplace_back(lane / lanes_per_phase, (unsigned)(b % SHARED_BANKS), b);
    sort_unique(words);
    // Runs of one (phase, bank): that bank's distinct words in the phase.
    uint64_t phases = 0, wavefronts = 0;
    for (size_t i = 0; i < words.size();) {
        const unsigned phase = std::get<0>(words[i]);
        uint64_t ways = 0;
        while (i < words.size() && std::get<0>(words[i]) == phase) {
            size_t j = i;
            while (j < words.size() && std::get<0>(words[j]) == phase && std::get<1>(words[j]) == std::get<1>(words[i]))
                ++j;
            ways = std::max<uint64_t>(ways, j - i);
            i = j;
        }
        ++phases, wavefronts += ways;
        s.shared_max_ways = std::max(s.shared_max_ways, ways);
    }
    s.shared_wavefronts += wavefronts;
    s.shared_ideal_wavefronts += phases;
    ++(w.store ? s.shared_store_requests : s.shared_load_requests);
}

void count_warp_access(const WarpAccess& w, unsigned lanes) {
    ProfileStats& s = state.stats;
    ++s.warp_accesses;
    if (w.lanes.size() < lanes) ++s.divergent_warp_accesses;
    if (w.space == Space::Global)
        count_global(w);
    else
        count_shared(w);
}

// Whether every lane logged the same instructions in the same order (no divergence): then the
// j-th entries of the lanes are one warp-level access, with no grouping to do.
bool lockstep(size_t first, unsigned lanes) {
    const auto& lead = state.logs[first];
    for (unsigned lane = 1; lane < lanes; ++lane) {
        const auto& log = state.logs[first + lane];
        if (log.size() != lead.size()) return false;
        for (size_t j = 0; j < log.size(); ++j)
            if (log[j].site != lead[j].site) return false;
    }
    return true;
}

// Groups the logs of the threads [first, first + lanes) of one warp into warp-level accesses:
// the k-th execution of an instruction by each lane.
void count_warp(size_t first, unsigned lanes) {
    if (lockstep(first, lanes)) {
        WarpAccess w;
        for (size_t j = 0; j < state.logs[first].size(); ++j) {
            const Access& lead = state.logs[first][j];
            w.space = lead.space, w.store = lead.store;
            w.lanes.clear();
            for (unsigned lane = 0; lane < lanes; ++lane) w.lanes.emplace_back(lane, state.logs[first + lane][j]);
            count_warp_access(w, lanes);
        }
        return;
    }
    std::unordered_map<uintptr_t, std::vector<uint32_t>> executions;  // site -> count so far, per lane
    std::map<std::pair<uintptr_t, uint32_t>, size_t> index;            // (site, k) -> position in `order`
    std::vector<WarpAccess> order;
    for (unsigned lane = 0; lane < lanes; ++lane)
        for (const Access& a : state.logs[first + lane]) {
            auto& count = executions[a.site];
            if (count.empty()) count.assign(lanes, 0);
            const uint32_t k = count[lane]++;
            auto [it, fresh] = index.emplace(std::make_pair(a.site, k), order.size());
            if (fresh) order.push_back(WarpAccess{a.space, a.store, {}});
            order[it->second].lanes.emplace_back(lane, a);
        }
    for (const WarpAccess& w : order) count_warp_access(w, lanes);
}

}  // namespace profile

// Runner hooks (no-ops unless a profiled launch is running).
void profile_begin_block(const Runner& r, size_t threads) {
    if (!profile::state.active) return;
    profile::state.logs.assign(threads, {});
    profile::state.dynamic_begin = reinterpret_cast<uintptr_t>(r.dynamic_shared);
    profile::state.dynamic_end = profile::state.dynamic_begin + r.dynamic_bytes;
}

// Every thread has reached a barrier or finished: the logs so far are complete warp by warp.
void profile_end_round(size_t threads) {
    if (!profile::state.active) return;
    for (size_t first = 0; first < threads; first += 32) {
        profile::count_warp(first, (unsigned)std::min<size_t>(32, threads - first));
        for (size_t t = first; t < std::min(threads, first + 32); ++t) profile::state.logs[t].clear();
    }
}

void profile_block_barrier() {
    if (profile::state.active) ++profile::state.stats.block_barriers;
}
void profile_warp_barrier() {
    if (profile::state.active) ++profile::state.stats.warp_barriers;
}

namespace profile {
void record(uintptr_t site, const void* addr, unsigned bytes, bool store) { log_access(site, addr, bytes, store); }
void count_simt_flops(uint64_t n) {
    if (state.active) state.stats.simt_flops += n;
}
void count_tensor_flops(uint64_t n, bool bf16) {
    if (!state.active) return;
    state.stats.tensor_flops += n;
    if (bf16) state.stats.bf16_tensor_flops += n;
}
void count_atomic() {
    if (state.active) ++state.stats.atomics;
}
}  // namespace profile

// The ThreadSanitizer entry points the instrumented kernels call.
#define EMU_TSAN_HOOKS(n)                                                                        \
    extern "C" void __tsan_read##n(void* p) {                                                    \
        profile::log_access((uintptr_t)__builtin_return_address(0), p, n, false);                 \
    }                                                                                            \
    extern "C" void __tsan_write##n(void* p) {                                                   \
        profile::log_access((uintptr_t)__builtin_return_address(0), p, n, true);                  \
    }                                                                                            \
    extern "C" void __tsan_unaligned_read##n(void* p) {                                          \
        profile::log_access((uintptr_t)__builtin_return_address(0), p, n, false);                 \
    }                                                                                            \
    extern "C" void __tsan_unaligned_write##n(void* p) {                                         \
        profile::log_access((uintptr_t)__builtin_return_address(0), p, n, true);                  \
    }
EMU_TSAN_HOOKS(1)
EMU_TSAN_HOOKS(2)
EMU_TSAN_HOOKS(4)
EMU_TSAN_HOOKS(8)
EMU_TSAN_HOOKS(16)
#undef EMU_TSAN_HOOKS
extern "C" void __tsan_read_range(void* p, unsigned long n) {
    profile::log_access((uintptr_t)__builtin_return_address(0), p, (unsigned)n, false);
}
extern "C" void __tsan_write_range(void* p, unsigned long n) {
    profile::log_access((uintptr_t)__builtin_return_address(0), p, (unsigned)n, true);
}
extern "C" void __tsan_init() {}
// Clang instruments function entry and exit too (GCC is told not to); nothing to count there.
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}

// Runs one launch of a profiled kernel (`launcher` is an emu_profiled_launch_* export) with
// profiling on, and writes its totals to `out`. Returns the launcher's code.
extern "C" int EMU_C(profile_launch)(int (*launcher)(const LaunchCfg*, void**), const LaunchCfg* cfg,
                                     void** params, const ProfileRange* globals, size_t n_globals,
                                     ProfileStats* out) {
    using namespace profile;
    std::lock_guard<std::mutex> lock(launch_mutex);
    state = State{};
    for (size_t i = 0; i < n_globals; ++i) {
        uintptr_t base = (uintptr_t)(i + 1) << 40;
        for (const GlobalBuffer& g : state.globals)
            if (g.begin == globals[i].begin) base = g.model_base;
        state.globals.push_back(GlobalBuffer{(uintptr_t)globals[i].begin, globals[i].bytes, base});
    }
    if (!find_tls_block()) {
        last_error = "emu profile: cannot find the static TLS block that holds __shared__ variables";
        return 3;
    }
    state.active = true;
    const int code = launcher(cfg, params);
    state.active = false;
    state.stats.dram_read_sectors = state.read_sectors.size();
    state.stats.dram_write_sectors = state.write_sectors.size();
    *out = state.stats;
    state = State{};
    return code;
}
