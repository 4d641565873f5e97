//! CPU time of the calling thread: what each stage costs, counted where it runs (the
//! benchmark's per-stage breakdown and the `*_cpu_seconds_total` metrics). Wall time
//! would count waiting; a thread's CPU clock counts only its own work.

use std::time::Duration;

/// The calling thread's CPU time so far (user + system).
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The CPU seconds `f` took on this thread, and its result.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = thread_cpu();
    let out = f();
    (out, thread_cpu().saturating_sub(start).as_secs_f64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn work_costs_cpu_and_sleep_does_not() {
        let (_, slept) = super::timed(|| std::thread::sleep(std::time::Duration::from_millis(50)));
        let (_, worked) = super::timed(|| {
            (0..5_000_000u64).fold(0u64, |a, b| std::hint::black_box(a.wrapping_mul(31).wrapping_add(b)))
        });
        assert!(slept < 0.02, "sleeping is not CPU: {slept}");
        assert!(worked > 0.0, "work is: {worked}");
    }
}
