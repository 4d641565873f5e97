//! Index benchmark. Banks are generated (xorshift, seeded) so runs are comparable:
//! - random: uniform 256-bit hashes;
//! - clustered: half the bank in clusters of 5,000 near-duplicates (within 40 bits of a
//!   centre), half random — the adversarial case for bucketed indexes.
//!
//! Queries: half near a banked hash (0–40 bits away), half unrelated. Every index answer
//! checked against the linear scan is compared, so a fast wrong index cannot report.
//!
//! Then the console's allowlist at its caps against an empty one, in the same run: a
//! frame's whole lookup (the smallest bank, then the allowlist) with 0 entries and with
//! 10,000, and the ratio.

use super::percentile_ms;
use anyhow::Context;
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vigil_core::SeededRng;
use vigil_hash::allow::{MAX_DISTANCES_PER_FRAME, MAX_ENTRIES, MAX_ENTRIES_PER_SCOPE, MAX_LIVE_HASHES};
use vigil_hash::config::DEFAULT_CROP_MAX_DISTANCE;
use vigil_hash::index::linear_scan;
use vigil_hash::synthetic::{flip_between, random_hash};
use vigil_hash::{AllowEntry, Allowlist, Bank, BankConfig, BankSet, DIHEDRAL, FrameHashes, PdqOutput, Variant};
use vigil_hash::{Hash256, HashIndex};

#[derive(clap::Args)]
pub struct HashBenchArgs {
    /// Bank sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    sizes: Vec<usize>,
    /// Queries per bank for the index.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Queries per bank for the linear scan (slow at 10 M).
    #[arg(long, default_value_t = 30)]
    scan_queries: usize,
    #[arg(long, default_value_t = 31)]
    radius: u32,
    /// A small smoke run (100,000 hashes, few queries) for CI.
    #[arg(long)]
    quick: bool,
    /// Also time FAISS (`faiss-cpu` from PyPI) on the same hashes when it is importable.
    #[arg(long)]
    faiss: bool,
}

fn bank(kind: &str, n: usize, rng: &mut SeededRng) -> Vec<Hash256> {
    match kind {
        "random" => (0..n).map(|_| random_hash(rng)).collect(),
        _ => {
            let mut v = Vec::with_capacity(n);
            while v.len() < n / 2 {
                let centre = random_hash(rng);
                for _ in 0..5000.min(n / 2 - v.len()) {
                    v.push(flip_between(rng, &centre, 0, 40));
                }
            }
            while v.len() < n {
                v.push(random_hash(rng));
            }
            v
        }
    }
}

fn queries(bank: &[Hash256], n: usize, rng: &mut SeededRng) -> Vec<Hash256> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let pick = rng.below(bank.len());
                flip_between(rng, &bank[pick], 0, 40)
            } else {
                random_hash(rng)
            }
        })
        .collect()
}

fn time_each(qs: &[Hash256], mut f: impl FnMut(&Hash256) -> usize) -> (Vec<Duration>, usize) {
    let mut times = Vec::with_capacity(qs.len());
    let mut hits = 0;
    for q in qs {
        let t = Instant::now();
        hits += f(q);
        times.push(t.elapsed());
    }
    times.sort_unstable();
    (times, hits)
}

pub fn run(mut args: HashBenchArgs) -> anyhow::Result<ExitCode> {
    if args.quick {
        args.sizes = vec![100_000];
        args.queries = 200;
        args.scan_queries = 20;
    }
    let mut all_exact = true;
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8}",
        "hashes", "bank", "build_s", "B/hash", "p50_ms", "p99_ms", "scan_p50", "speedup"
    );
    for &n in &args.sizes {
        for kind in ["random", "clustered"] {
            let mut rng = SeededRng::new(0x5eed_0000 ^ n as u64);
            let hashes = bank(kind, n, &mut rng);
            let qs = queries(&hashes, args.queries, &mut rng);
            let started = Instant::now();
            let index = HashIndex::build(hashes.clone());
            let build_s = started.elapsed().as_secs_f64();
            let bytes_per_hash = index.memory_bytes() as f64 / n as f64;
            // Warm the tables once so the first queries do not pay page faults.
            for q in qs.iter().take(20) {
                std::hint::black_box(index.search(q, args.radius));
            }
            let (idx_times, idx_hits) = time_each(&qs, |q| index.search(q, args.radius).len());
            let scan_qs = &qs[..args.scan_queries.min(qs.len())];
            let (scan_times, _) = time_each(scan_qs, |q| linear_scan(&hashes, q, args.radius).len());
            let exact = scan_qs.iter().all(|q| index.search(q, args.radius) == linear_scan(&hashes, q, args.radius));
            all_exact &= exact;
            let (p50, p99, scan50) =
                (percentile_ms(&idx_times, 50.0), percentile_ms(&idx_times, 99.0), percentile_ms(&scan_times, 50.0));
            println!(
                "{n:>10} {kind:>9} {build_s:>9.2} {bytes_per_hash:>9.1} {p50:>9.3} {p99:>10.3} {scan50:>10.2} {:>7.0}x",
                scan50 / p50
            );
            let mut record = json!({
                "bench": "hash_index", "hashes": n, "bank": kind, "radius": args.radius,
                "build_s": build_s, "bytes_per_hash": bytes_per_hash,
                "query_p50_ms": p50, "query_p99_ms": p99, "queries": qs.len(), "hits": idx_hits,
                "scan_p50_ms": scan50, "speedup_p50_vs_scan": scan50 / p50,
                "speedup_p99_vs_scan": scan50 / p99, "exact_vs_scan": exact,
            });
            if args.faiss {
                match faiss(&hashes, &qs, args.radius) {
                    Ok(f) => {
                        for (name, r) in f.as_object().into_iter().flatten() {
                            let (fp50, fp99) = (
                                r["query_p50_ms"].as_f64().unwrap_or(f64::NAN),
                                r["query_p99_ms"].as_f64().unwrap_or(f64::NAN),
                            );
                            println!(
                                "{:>10} {kind:>9}   faiss {name}: p50 {fp50:.3} ms, p99 {fp99:.3} ms, build {:.2} s; vigil is {:.0}x faster at p50, {:.0}x at p99",
                                n,
                                r["build_s"].as_f64().unwrap_or(f64::NAN),
                                fp50 / p50,
                                fp99 / p99
                            );
                        }
                        record["faiss"] = f;
                    }
                    Err(e) => println!("{:>10} {kind:>9}   faiss: not measured: {e:#}", n),
                }
            }
            let batches = batch_bench(&index, &qs, args.radius, &mut rng);
            all_exact &= batches.iter().all(|b| b["exact_vs_one_by_one"] == true);
            record["batches"] = json!(batches);
            eprintln!("{record}");
            drop(index);
        }
    }
    let smallest = args.sizes.iter().copied().min().unwrap_or(100_000);
    let record = allowlist_bench(smallest, args.queries.min(1000), &mut SeededRng::new(0xa110));
    all_exact &= record["exact_vs_scan"] == true;
    eprintln!("{record}");
    anyhow::ensure!(all_exact, "the index disagreed with the linear scan");
    Ok(ExitCode::SUCCESS)
}

/// A frame as the worker looks it up: eight dihedral hashes (the seven others unrelated,
/// as a photo's are) and two crop variants 10-30 bits from the original.
fn frame_hashes(original: Hash256, rng: &mut SeededRng) -> FrameHashes {
    let mut variants: Vec<vigil_hash::variants::VariantHash> = DIHEDRAL
        .iter()
        .enumerate()
        .map(|(i, d)| vigil_hash::variants::VariantHash {
            variant: Variant::Dihedral(*d),
            hash: if i == 0 { original } else { random_hash(rng) },
        })
        .collect();
    variants.extend([20u16, 50].map(|per_mille| vigil_hash::variants::VariantHash {
        variant: Variant::Crop { per_mille },
        hash: flip_between(rng, &original, 10, 30),
    }));
    FrameHashes { pdq: PdqOutput { hash: original, quality: 100 }, variants }
}

/// One frame's whole lookup (a random bank of `bank_size`, every variant, then the
/// allowlist) with no allowlist entries, and with the caps' worst: 10,000 entries, 1,000
/// per scope, as many hashes as the caps allow (26 each, random), all at distance 31.
/// Frames: a third near a banked hash, a third near an entry's hash, a third unrelated.
/// Timed alternately, frame by frame, in the same run; the allowlist's answers are
/// checked against comparing every entry's hash with every variant (what it did before
/// the index), which is also timed on a few frames.
fn allowlist_bench(bank_size: usize, frames: usize, rng: &mut SeededRng) -> serde_json::Value {
    let rows: Vec<vigil_hash::format::Row> = (0..bank_size)
        .map(|i| vigil_hash::format::Row {
            line: i + 1,
            id: format!("b{i}"),
            hash: random_hash(rng),
            label: String::new(),
        })
        .collect();
    let banked: Vec<Hash256> = rows.iter().step_by(97).map(|r| r.hash).collect();
    let bank = std::sync::Arc::new(Bank::from_rows(BankConfig::for_path("bench"), rows, 0));
    let per_entry = MAX_LIVE_HASHES / MAX_ENTRIES;
    let entries: Vec<AllowEntry> = (0..MAX_ENTRIES)
        .map(|i| AllowEntry {
            id: format!("fp/{i}"),
            scope_kind: vigil_core::ScopeKind::Bank,
            scope: format!("scope{}", i / MAX_ENTRIES_PER_SCOPE),
            hashes: (0..per_entry).map(|_| random_hash(rng)).collect(),
            max_distance: vigil_core::bank_update::MAX_DISTANCE,
            expires_at_unix_ms: u64::MAX,
        })
        .collect();
    let started = Instant::now();
    let list = Allowlist::new(entries.clone());
    let build_s = started.elapsed().as_secs_f64();
    let empty = BankSet { banks: vec![bank.clone()], allowlist: Default::default() };
    let full = BankSet { banks: vec![bank], allowlist: std::sync::Arc::new(list) };
    let frames: Vec<FrameHashes> = (0..frames.max(3))
        .map(|i| {
            let original = match i % 3 {
                0 => {
                    let near = banked[rng.below(banked.len())];
                    flip_between(rng, &near, 0, 20)
                }
                1 => {
                    let near = entries[rng.below(entries.len())].hashes[rng.below(per_entry)];
                    flip_between(rng, &near, 0, 31)
                }
                _ => random_hash(rng),
            };
            frame_hashes(original, rng)
        })
        .collect();
    for f in frames.iter().take(20) {
        std::hint::black_box((empty.lookup_at(f, 0), full.lookup_at(f, 0)));
    }
    let (mut t_empty, mut t_full, mut t_apply) = (Vec::new(), Vec::new(), Vec::new());
    let (mut distances, mut worst, mut allowed_frames, mut over_budget) = (0usize, 0usize, 0usize, 0usize);
    for f in &frames {
        let t = Instant::now();
        std::hint::black_box(empty.lookup_at(f, 0));
        t_empty.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(full.lookup_at(f, 0));
        t_full.push(t.elapsed());
        let mut m = Vec::new();
        let t = Instant::now();
        let allowed = full.allowlist.apply(f, &mut m, 0);
        t_apply.push(t.elapsed());
        distances += allowed.distances;
        worst = worst.max(allowed.distances);
        allowed_frames += usize::from(!m.is_empty());
        over_budget += usize::from(allowed.over_budget);
    }
    // Before the index: every hash of every entry against every variant.
    let all: Vec<(usize, Hash256)> =
        entries.iter().enumerate().flat_map(|(i, e)| e.hashes.iter().map(move |h| (i, *h))).collect();
    let scan_frames = &frames[..frames.len().min(6)];
    let mut t_scan = Vec::new();
    let mut exact = true;
    for f in scan_frames {
        let t = Instant::now();
        let mut reached: Vec<usize> = f
            .variants
            .iter()
            .flat_map(|v| all.iter().filter(move |(_, h)| h.distance(&v.hash) <= 31).map(|(i, _)| *i))
            .collect();
        t_scan.push(t.elapsed());
        reached.sort_unstable();
        reached.dedup();
        let mut m = Vec::new();
        full.allowlist.apply(f, &mut m, 0);
        let mut found: Vec<usize> = m.iter().filter_map(|m| m.id.strip_prefix("fp/")?.parse().ok()).collect();
        found.sort_unstable();
        exact &= found == reached;
    }
    for t in [&mut t_empty, &mut t_full, &mut t_apply, &mut t_scan] {
        t.sort_unstable();
    }
    let mean_ms = |t: &[Duration]| t.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / t.len() as f64;
    let (e50, f50, a50, s50) = (
        percentile_ms(&t_empty, 50.0),
        percentile_ms(&t_full, 50.0),
        percentile_ms(&t_apply, 50.0),
        percentile_ms(&t_scan, 50.0),
    );
    let (e99, f99) = (percentile_ms(&t_empty, 99.0), percentile_ms(&t_full, 99.0));
    let (emean, fmean) = (mean_ms(&t_empty), mean_ms(&t_full));
    let n = frames.len();
    println!();
    println!(
        "allowlist: one frame's lookup (bank of {bank_size} hashes, {} variants), {n} frames, timed alternately",
        frames[0].variants.len()
    );
    println!("{:>30} {:>9} {:>9} {:>9}", "", "p50_ms", "p99_ms", "mean_ms");
    println!("{:>30} {e50:>9.4} {e99:>9.4} {emean:>9.4}", "0 entries");
    println!("{:>30} {f50:>9.4} {f99:>9.4} {fmean:>9.4}", format!("{MAX_ENTRIES} entries ({} hashes)", all.len()));
    println!("{:>30} {:>8.2}x {:>8.2}x {:>8.2}x", "ratio", f50 / e50, f99 / e99, fmean / emean);
    println!(
        "allowlist alone p50 {a50:.4} ms; distances per frame mean {:.0}, max {worst} (budget {MAX_DISTANCES_PER_FRAME}, {over_budget} over); {allowed_frames} of {n} frames allowed; index built in {build_s:.2} s",
        distances as f64 / n as f64
    );
    println!(
        "before the index (every hash, every variant: {} distances): p50 {s50:.2} ms per frame, {:.0}x the lookup with 0 entries{}",
        all.len() * frames[0].variants.len(),
        s50 / e50,
        if exact { "" } else { "  NOT EXACT" }
    );
    json!({
        "bench": "allowlist", "bank_hashes": bank_size, "frames": n, "entries": MAX_ENTRIES,
        "allow_hashes": all.len(), "build_s": build_s,
        "lookup_0_entries_p50_ms": e50, "lookup_0_entries_p99_ms": e99, "lookup_0_entries_mean_ms": emean,
        "lookup_full_p50_ms": f50, "lookup_full_p99_ms": f99, "lookup_full_mean_ms": fmean,
        "ratio_p50": f50 / e50, "ratio_p99": f99 / e99, "ratio_mean": fmean / emean,
        "allowlist_apply_p50_ms": a50, "distances_mean": distances as f64 / n as f64, "distances_max": worst,
        "over_budget": over_budget, "frames_allowed": allowed_frames,
        "scan_p50_ms": s50, "exact_vs_scan": exact,
    })
}

/// Batched against one-by-one search on the same index, batches of two shapes:
/// - `frame`: one frame's variants, the query plus seven unrelated hashes (dihedral
///   variants of a photo are 110-130 bits from it) and two hashes 10-30 bits from it
///   (crop variants, searched at the default crop reach, 46);
/// - `streams`: 16 unrelated queries, one frame from each of 16 streams.
fn batch_bench(index: &HashIndex, qs: &[Hash256], radius: u32, rng: &mut SeededRng) -> Vec<serde_json::Value> {
    let frames: Vec<Vec<(Hash256, u32)>> = qs
        .iter()
        .map(|q| {
            let mut b = vec![(*q, radius)];
            b.extend((0..7).map(|_| (random_hash(rng), radius)));
            // Crop variants are searched at the banks' default reach.
            let reach = DEFAULT_CROP_MAX_DISTANCE.max(radius);
            b.extend((0..2).map(|_| (flip_between(rng, q, 10, 30), reach)));
            b
        })
        .collect();
    let streams: Vec<Vec<(Hash256, u32)>> =
        qs.chunks_exact(16).map(|c| c.iter().map(|q| (*q, radius)).collect()).collect();
    let mut records = Vec::new();
    for (shape, batches) in [("frame", frames), ("streams", streams)] {
        // Every batch one by one, then every batch together: timing a batch right after
        // the same queries one by one would find their buckets still in cache.
        let (mut single, mut batched) = (Vec::new(), Vec::new());
        let mut answers = Vec::with_capacity(batches.len());
        for b in &batches {
            let t = Instant::now();
            let one_by_one: Vec<Vec<_>> = b.iter().map(|(q, r)| index.search(q, *r)).collect();
            single.push(t.elapsed());
            answers.push(one_by_one);
        }
        let mut exact = true;
        for (b, one_by_one) in batches.iter().zip(&answers) {
            let t = Instant::now();
            let together = index.search_batch(b);
            batched.push(t.elapsed());
            exact &= &together == one_by_one;
        }
        single.sort_unstable();
        batched.sort_unstable();
        let size = batches.first().map_or(0, Vec::len);
        let (s50, s99) = (percentile_ms(&single, 50.0), percentile_ms(&single, 99.0));
        let (b50, b99) = (percentile_ms(&batched, 50.0), percentile_ms(&batched, 99.0));
        println!(
            "{:>10} {:>9}   batch of {size} ({shape}): one by one p50 {s50:.3} / p99 {s99:.3} ms, together {b50:.3} / {b99:.3} ms: {:.2}x at p50, {:.2}x at p99{}",
            index.len(),
            "",
            s50 / b50,
            s99 / b99,
            if exact { "" } else { "  NOT EXACT" }
        );
        records.push(json!({
            "shape": shape, "batch": size, "batches": batches.len(),
            "one_by_one_p50_ms": s50, "one_by_one_p99_ms": s99,
            "batched_p50_ms": b50, "batched_p99_ms": b99,
            "speedup_p50": s50 / b50, "speedup_p99": s99 / b99, "exact_vs_one_by_one": exact,
        }));
    }
    records
}

/// Runs scripts/bench_faiss.py on the same hashes and queries, returns its JSON.
fn faiss(hashes: &[Hash256], qs: &[Hash256], radius: u32) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, hs: &[Hash256]| -> anyhow::Result<std::path::PathBuf> {
        let p = dir.path().join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p)?);
        for h in hs {
            f.write_all(&h.0)?;
        }
        f.flush()?;
        Ok(p)
    };
    let (db, q) = (write("db.bin", hashes)?, write("q.bin", qs)?);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_faiss.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([db.to_str().unwrap_or_default(), q.to_str().unwrap_or_default(), &radius.to_string()])
        .output()
        .context("running python3")?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    Ok(serde_json::from_slice(&out.stdout)?)
}
