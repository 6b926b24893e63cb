// Per-cgroup record budget (SensorConfig.budget): one container flooding events must not fill the
// shared ring buffer and make every other container's records drop. The loader puts this file
// before common.bpf.h, whose og_reserve()/og_output() (the only ways a probe sends a record) ask
// og_budget_allow() first. Placeholders from budget.render():
//   OG_BUDGET_NS          ns between records at the sustained rate (1e9 / records_per_s); 0: off
//   OG_BUDGET_BURST_NS    burst x OG_BUDGET_NS: how far ahead of now a cgroup may run
//   OG_BUDGET_RESERVE_NS / OG_BUDGET_RESERVE_BURST_NS  the same for each high-value class reserve
//   OG_BUDGET_CGROUPS     LRU hash size (cgroups tracked at once)
//   og_budget_class(type) 0 for ordinary records, 1..OG_BUDGET_CLASSES-1 for high-value classes
//
// Kernel facts only: bpf_get_current_cgroup_id() (the cgroup v2 directory inode, what the record
// header carries) and bpf_ktime_get_ns() (CLOCK_MONOTONIC) as the bucket clock, both the values
// the record header gets (the callers read them once for both). Each bucket is a GCRA (the token
// bucket kept as one "theoretical arrival time" per bucket, no division at run time). Cost per
// record: one hash lookup and a few compares. Updates from two
// CPUs at once may race on a bucket (no lock): at worst a record more or less is let through.

#ifndef OG_BUDGET_NS
#define OG_BUDGET_NS 0
#endif
#define OG_BUDGET_CLASSES 4

#if OG_BUDGET_NS > 0
// Read by LoadedProgram.budget_entries() (BCC mirrors the struct).
struct og_budget {
    u64 tat[OG_BUDGET_CLASSES];  // [0]: the cgroup's bucket; [c]: class c's reserve
    u64 dropped;                 // records of this cgroup not sent (over budget)
    u64 dropped_high;            // of which high-value (their class reserve was empty too)
};

BPF_TABLE("lru_hash", u64, struct og_budget, og_budget, OG_BUDGET_CGROUPS);
// Index 0: every record dropped over budget (exact, also for cgroups the LRU since evicted).
BPF_PERCPU_ARRAY(og_budget_drops, u64, 1);

// One GCRA step: send when advancing the bucket by one interval keeps it within `burst` of now.
static __always_inline int og_gcra(u64 *tat, u64 now, u64 interval, u64 burst) {
    u64 t = *tat > now ? *tat : now;
    t += interval;
    if (t - now > burst) { return 0; }
    *tat = t;
    return 1;
}

// 1: send the record; 0: over budget (counted for the cgroup and in total). `cg` and `now`: the
// record's bpf_get_current_cgroup_id() and bpf_ktime_get_ns().
static __always_inline int og_budget_allow(u32 type, u64 cg, u64 now) {
    struct og_budget *b = og_budget.lookup(&cg);
    if (!b) {
        struct og_budget fresh = {};
        fresh.tat[0] = now + OG_BUDGET_NS;
        og_budget.insert(&cg, &fresh);
        return 1;
    }
    if (og_gcra(&b->tat[0], now, OG_BUDGET_NS, OG_BUDGET_BURST_NS)) { return 1; }
    u32 cls = og_budget_class(type);
    if (cls > 0 && cls < OG_BUDGET_CLASSES) {
#if OG_BUDGET_RESERVE_NS > 0
        if (og_gcra(&b->tat[cls], now, OG_BUDGET_RESERVE_NS, OG_BUDGET_RESERVE_BURST_NS)) {
            return 1;
        }
#endif
        __sync_fetch_and_add(&b->dropped_high, 1);
    }
    __sync_fetch_and_add(&b->dropped, 1);
    int zero = 0;
    u64 *total = og_budget_drops.lookup(&zero);
    if (total) { *total += 1; }
    return 0;
}
#else
static __always_inline int og_budget_allow(u32 type, u64 cg, u64 now) { return 1; }
#endif
