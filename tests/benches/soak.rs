//! The kill-loop soak: `--trials N` (default 50) SIGKILLs of the sidecar at random moments of
//! backups and N of the restore init container at random moments of restores, with the checks of
//! `tests/support/kill.rs` (the suite, `tests/it/kill_loops.rs`, runs 10 of each). Prints the
//! figures of both loops.
//!
//! Run: `MEDUSA_RS_TOOLS=$PWD/.tools cargo bench -p medusa-tests --bench soak -- --trials 50`
//! (after `scripts/test.sh` or `cargo build --release --workspace --bins`).

use anyhow::{Context, Result, bail};
use medusa_tests::kill;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut trials = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--trials" => trials = args.next().context("--trials N")?.parse()?,
            other => bail!("unknown argument {other:?} (use --trials N)"),
        }
    }
    let t0 = std::time::Instant::now();
    let s = kill::sidecar_loop(trials).await?;
    println!(
        "sidecar: {} trials survived ({} kills mid-backup, {} after it finished); slowest FAILED after the restart listened {:.0} ms; {} backups restored exactly; {} storage requests; {:.0} s",
        s.trials,
        s.killed_mid_way,
        s.killed_after,
        s.slowest_failed.as_secs_f64() * 1000.0,
        s.completed,
        s.requests,
        t0.elapsed().as_secs_f64()
    );
    let t1 = std::time::Instant::now();
    let r = kill::restore_loop(trials).await?;
    println!(
        "restore-init: {} trials survived ({} kills mid-restore, {} after it finished); {} reruns completed with the data equal to the backup and no staging left; {} storage requests; {:.0} s",
        r.trials,
        r.killed_mid_way,
        r.killed_after,
        r.completed,
        r.requests,
        t1.elapsed().as_secs_f64()
    );
    Ok(())
}
