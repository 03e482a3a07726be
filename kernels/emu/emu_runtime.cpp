// emu_runtime.cpp: the scheduler behind cuda_emu.h (docs/DESIGN.md section 2).
//
// Every thread of a block is a fiber with its own small stack. On x86-64 the switch is six
// register pushes and a stack swap (no system call, unlike swapcontext's signal-mask save);
// elsewhere, and under AddressSanitizer (which must see stack switches), it is ucontext.
// The scheduler resumes the ready fibers in thread order (or in reverse order, to expose races),
// each until it finishes or waits at a barrier; then it releases whichever barrier every participant has reached.
// A barrier that can never be released (some threads exited, or wait at a different barrier)
// is a deadlock on a real GPU and is reported as an error here.
#include "cuda_emu.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace emu {

thread_local ThreadState* current_thread = nullptr;
thread_local BlockState current_block{};

namespace {

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(EMU_UCONTEXT)
#define EMU_FAST_SWITCH 1
#endif

#ifdef EMU_FAST_SWITCH
// The profiling build links beside this one, so the symbol carries the build's prefix.
#define EMU_SWITCH_STACK EMU_C(switch_stack)
#define EMU_STRINGIFY_(x) #x
#define EMU_STRINGIFY(x) EMU_STRINGIFY_(x)
#define EMU_SWITCH_STACK_NAME EMU_STRINGIFY(EMU_SWITCH_STACK)
extern "C" void EMU_SWITCH_STACK(void** save_sp, void* new_sp);
// Saves the callee-saved registers on the current stack, stores the stack pointer in *save_sp,
// loads new_sp and restores the registers saved there. A fresh stack is laid out so that the
// final `ret` enters the fiber's entry function.
asm(".text\n"
    ".globl " EMU_SWITCH_STACK_NAME "\n"
    ".hidden " EMU_SWITCH_STACK_NAME "\n"
    ".type " EMU_SWITCH_STACK_NAME ",@function\n"
    EMU_SWITCH_STACK_NAME ":\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size " EMU_SWITCH_STACK_NAME ",.-" EMU_SWITCH_STACK_NAME "\n");

struct Context {
    void* sp = nullptr;
};

void context_switch(Context& from, Context& to) { EMU_SWITCH_STACK(&from.sp, to.sp); }

void context_start(Context& c, unsigned char* stack, size_t bytes, void (*entry)(), Context&) {
    auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                              // return address of entry: it never returns
    *--sp = reinterpret_cast<void*>(entry);       // taken by `ret`; entry then sees rsp % 16 == 8
    for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp, rbx, r12-r15
    c.sp = sp;
}
#else
struct Context {
    ucontext_t uc;
};

void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

void context_start(Context& c, unsigned char* stack, size_t bytes, void (*entry)(), Context& back) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = &back.uc;
    makecontext(&c.uc, entry, 0);
}
#endif

enum class FiberState { Ready, AtBlockBarrier, AtWarpBarrier, Done };

// A cp.async issued and not yet landed (pipeline_emu.h).
struct PendingCopy {
    unsigned char* dst;
    const unsigned char* src;
    unsigned bytes, zfill;
};

struct Fiber {
    Context ctx;
    ThreadState ts;
    FiberState state;
    unsigned int warp_mask;
    unsigned char* stack;
    // The thread's copies not landed yet, oldest first, and where each committed batch ends in
    // them (the reverse schedule's deferred copies; pipeline_emu.h).
    std::vector<PendingCopy> copies;
    std::vector<size_t> batch_ends;
};

// The alignment of a block's dynamic shared memory (a GPU's is at least this).
constexpr size_t DYNAMIC_SHARED_ALIGN = 128;

size_t stack_bytes() {
    static const size_t bytes = [] {
        const char* kb = std::getenv("EMU_STACK_KB");
        long v = kb ? std::atol(kb) : 0;
        return (size_t)(v > 0 ? v : 128) * 1024;
    }();
    return bytes;
}

// One per OS thread; its fibers and stacks are reused by every later block and launch.
struct Runner {
    std::vector<Fiber> fibers;
    Context scheduler;
    Fiber* running = nullptr;
    std::vector<uint64_t> warp_slots;
    // The block's dynamic shared memory: `dynamic_bytes` from `dynamic_shared`, aligned as a GPU
    // aligns it (wmma loads and 16-byte copies need 32 and 16).
    std::vector<unsigned char> dynamic_storage;
    unsigned char* dynamic_shared = nullptr;
    size_t dynamic_bytes = 0;
    // Whether cp.async copies land when issued (forward schedule) or at their wait (reverse).
    bool copies_land_at_issue = true;
    BlockBody body = nullptr;
    void* closure = nullptr;
    std::string error;

    ~Runner() {
        for (auto& f : fibers)
            if (f.stack) munmap(f.stack - page(), stack_bytes() + page());
    }

    static size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }

    bool ensure_fibers(size_t n) {
        while (fibers.size() < n) {
            // A guard page below each stack turns a stack overflow into a fault, not corruption.
            size_t total = stack_bytes() + page();
            void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (mem == MAP_FAILED) {
                error = "emu: cannot allocate fiber stacks";
                return false;
            }
            mprotect(mem, page(), PROT_NONE);
            Fiber f{};
            f.stack = static_cast<unsigned char*>(mem) + page();
            fibers.push_back(f);
        }
        return true;
    }

    bool run_block(const LaunchCfg* cfg, uint3 block_idx, bool reverse);
    bool release_warps(size_t n, const uint3& b);
};

thread_local Runner* runner = nullptr;
thread_local std::string last_error;

}  // namespace

#ifdef EMU_PROFILE
#include "emu_profiler.h"
#define EMU_PROFILE_HOOK(call) call
#else
#define EMU_PROFILE_HOOK(call) ((void)0)
#endif

namespace {

Runner& this_runner() {
    static thread_local std::unique_ptr<Runner> owned;
    if (!owned) owned.reset(new Runner());
    runner = owned.get();
    return *owned;
}

[[noreturn]] void fiber_main() {
    Runner* r = runner;
    r->body(r->closure);
    r->running->state = FiberState::Done;
    context_switch(r->running->ctx, r->scheduler);
    std::abort();  // a finished fiber is never resumed
}

std::string where(const uint3& b) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "block (%u,%u,%u)", b.x, b.y, b.z);
    return buf;
}

// Releases every warp whose named lanes have all reached a warp barrier.
// Returns false (with `error` set) when a warp can never be released.
bool Runner::release_warps(size_t n, const uint3& b) {
    for (size_t w = 0; w * 32 < n; ++w) {
        size_t lo = w * 32, hi = std::min(n, lo + 32);
        unsigned int named = 0;
        bool any = false;
        for (size_t t = lo; t < hi; ++t)
            if (fibers[t].state == FiberState::AtWarpBarrier) {
                named |= fibers[t].warp_mask;
                any = true;
            }
        if (!any) continue;
        for (size_t t = lo; t < hi; ++t) {
            if (!((named >> (t - lo)) & 1u)) continue;
            FiberState s = fibers[t].state;
            if (s == FiberState::AtWarpBarrier) continue;
            char buf[256];
            std::snprintf(buf, sizeof buf,
                          "warp-synchronous operation in %s, warp %zu: lane %zu is named in the mask but %s",
                          where(b).c_str(), w, t - lo,
                          s == FiberState::Done ? "had exited" : "waits at __syncthreads() instead");
            error = buf;
            return false;
        }
        for (size_t t = lo; t < hi; ++t)
            if (fibers[t].state == FiberState::AtWarpBarrier) fibers[t].state = FiberState::Ready;
        EMU_PROFILE_HOOK(profile_warp_barrier());
        // Caller loops again: one released warp is progress.
        return true;
    }
    return true;
}

bool Runner::run_block(const LaunchCfg* cfg, uint3 block_idx, bool reverse) {
    const size_t bx = cfg->block[0], by = cfg->block[1], bz = cfg->block[2];
    const size_t n = bx * by * bz;
    if (!ensure_fibers(n)) return false;
    warp_slots.assign(((n + 31) / 32) * 32, 0);
    // Poisoned with 0xff bytes (a NaN as float) so reads of never-written shared memory show.
    dynamic_storage.assign(cfg->shared_bytes + DYNAMIC_SHARED_ALIGN, 0xff);
    const uintptr_t storage = reinterpret_cast<uintptr_t>(dynamic_storage.data());
    dynamic_shared = dynamic_storage.data() + (-storage & (DYNAMIC_SHARED_ALIGN - 1));
    dynamic_bytes = cfg->shared_bytes;
    copies_land_at_issue = !reverse;

    current_block.block_idx = block_idx;
    current_block.block_dim = dim3(cfg->block[0], cfg->block[1], cfg->block[2]);
    current_block.grid_dim = dim3(cfg->grid[0], cfg->grid[1], cfg->grid[2]);
    current_block.dynamic_shared = dynamic_bytes == 0 ? nullptr : dynamic_shared;
    current_block.dynamic_shared_bytes = cfg->shared_bytes;

    for (size_t i = 0; i < n; ++i) {
        Fiber& f = fibers[i];
        f.ts.linear = (unsigned int)i;
        f.ts.thread_idx = uint3{(unsigned int)(i % bx), (unsigned int)((i / bx) % by), (unsigned int)(i / (bx * by))};
        f.state = FiberState::Ready;
        f.warp_mask = 0;
        f.copies.clear();
        f.batch_ends.clear();
        context_start(f.ctx, f.stack, stack_bytes(), fiber_main, scheduler);
    }
    EMU_PROFILE_HOOK(profile_begin_block(*this, n));

    for (;;) {
        for (size_t k = 0; k < n; ++k) {
            Fiber& f = fibers[reverse ? n - 1 - k : k];
            if (f.state != FiberState::Ready) continue;
            running = &f;
            current_thread = &f.ts;
            context_switch(scheduler, f.ctx);
        }
        running = nullptr;
        current_thread = nullptr;
        EMU_PROFILE_HOOK(profile_end_round(n));

        size_t at_block = 0, at_warp = 0, done = 0;
        for (size_t i = 0; i < n; ++i) {
            switch (fibers[i].state) {
                case FiberState::AtBlockBarrier: ++at_block; break;
                case FiberState::AtWarpBarrier: ++at_warp; break;
                case FiberState::Done: ++done; break;
                case FiberState::Ready: break;
            }
        }
        if (done == n) return true;
        if (at_warp > 0) {
            if (!release_warps(n, block_idx)) return false;
            continue;
        }
        if (done > 0) {
            char buf[256];
            std::snprintf(buf, sizeof buf,
                          "divergent __syncthreads() in %s: %zu of %zu threads wait at the barrier, %zu had "
                          "exited (a deadlock on a GPU)",
                          where(block_idx).c_str(), at_block, n, done);
            error = buf;
            return false;
        }
        EMU_PROFILE_HOOK(profile_block_barrier());
        for (size_t i = 0; i < n; ++i) fibers[i].state = FiberState::Ready;
    }
}

std::string validate(const LaunchCfg* cfg) {
    for (int d = 0; d < 3; ++d)
        if (cfg->grid[d] == 0 || cfg->block[d] == 0) return "emu: launch with a zero grid or block dimension";
    unsigned long long threads = (unsigned long long)cfg->block[0] * cfg->block[1] * cfg->block[2];
    if (threads > 1024) return "emu: more than 1024 threads per block (" + std::to_string(threads) + ")";
    if (cfg->block[2] > 64) return "emu: blockDim.z above 64";
    if (cfg->grid[1] > 65535 || cfg->grid[2] > 65535) return "emu: gridDim.y or gridDim.z above 65535";
    if (cfg->shared_bytes > 227 * 1024) return "emu: more dynamic shared memory than any GPU has";
    return "";
}

unsigned int host_threads(unsigned long long blocks) {
    static const unsigned int configured = [] {
        const char* v = std::getenv("EMU_THREADS");
        long n = v ? std::atol(v) : 0;
        if (n <= 0) n = (long)std::max(1u, std::thread::hardware_concurrency());
        return (unsigned int)std::min(n, 64L);
    }();
    return (unsigned int)std::min<unsigned long long>(configured, blocks);
}

}  // namespace

void sync_block() {
    Fiber* f = runner->running;
    f->state = FiberState::AtBlockBarrier;
    context_switch(f->ctx, runner->scheduler);
}

void sync_warp(unsigned int mask) {
    Fiber* f = runner->running;
    f->state = FiberState::AtWarpBarrier;
    f->warp_mask = mask;
    context_switch(f->ctx, runner->scheduler);
}

uint64_t* warp_slots() { return runner->warp_slots.data() + (current_thread->linear & ~31u); }

namespace {
void land(const PendingCopy& c) {
    std::memcpy(c.dst, c.src, c.bytes - c.zfill);
    std::memset(c.dst + (c.bytes - c.zfill), 0, c.zfill);
}
}  // namespace

void async_copy(void* dst, const void* src, unsigned bytes, unsigned zfill, uintptr_t site) {
    const PendingCopy c{static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src), bytes, zfill};
    // The copy's global load and its shared store are two accesses; site + 1 names the store.
    if (bytes > zfill) EMU_PROFILE_HOOK(profile::record(site, src, bytes - zfill, false));
    EMU_PROFILE_HOOK(profile::record(site + 1, dst, bytes, true));
    if (runner->copies_land_at_issue)
        land(c);
    else
        runner->running->copies.push_back(c);
}

void async_commit() {
    Fiber* f = runner->running;
    f->batch_ends.push_back(f->copies.size());
}

void async_wait_prior(unsigned prior) {
    Fiber* f = runner->running;
    if (f->batch_ends.size() <= prior) return;
    const size_t done = f->batch_ends[f->batch_ends.size() - 1 - prior];
    for (size_t i = 0; i < done; ++i) land(f->copies[i]);
    f->copies.erase(f->copies.begin(), f->copies.begin() + (long)done);
    f->batch_ends.erase(f->batch_ends.begin(), f->batch_ends.end() - prior);
    for (size_t& end : f->batch_ends) end -= done;
}

int run_grid(const LaunchCfg* cfg, BlockBody body, void* closure) {
    last_error = validate(cfg);
    if (!last_error.empty()) return 1;
    const unsigned long long gx = cfg->grid[0], gy = cfg->grid[1], gz = cfg->grid[2];
    const unsigned long long blocks = gx * gy * gz;
    const bool reverse = cfg->reverse_schedule != 0;

    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    std::mutex error_mu;
    std::string first_error;

    auto worker = [&] {
        Runner& r = this_runner();
        r.body = body;
        r.closure = closure;
        for (;;) {
            if (failed.load()) return;
            unsigned long long i = next.fetch_add(1);
            if (i >= blocks) return;
            unsigned long long b = reverse ? blocks - 1 - i : i;
            uint3 idx{(unsigned int)(b % gx), (unsigned int)((b / gx) % gy), (unsigned int)(b / (gx * gy))};
            if (!r.run_block(cfg, idx, reverse)) {
                std::lock_guard<std::mutex> lock(error_mu);
                if (!failed.exchange(true)) first_error = r.error;
                return;
            }
        }
    };

#ifdef EMU_PROFILE
    // Profiled launches run on the calling thread (see emu_profiler.h).
    unsigned int n_threads = 1;
#else
    unsigned int n_threads = host_threads(blocks);
#endif
    if (n_threads <= 1) {
        worker();
    } else {
        std::vector<std::thread> pool;
        for (unsigned int t = 0; t < n_threads; ++t) pool.emplace_back(worker);
        for (auto& t : pool) t.join();
    }
    if (failed.load()) {
        last_error = first_error;
        return 2;
    }
    return 0;
}

}  // namespace emu

extern "C" const char* EMU_C(last_error)() { return emu::last_error.c_str(); }
