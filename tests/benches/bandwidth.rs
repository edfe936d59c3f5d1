//! `transfer_max_bandwidth` as Medusa means it: a cap per transfer, so that with
//! `concurrent_transfers = 4` and `transfer_max_bandwidth = 10MB/s` a backup moves at about
//! 40 MB/s (accepted: 30-44 MB/s, the cap with room for start-up and bursts), and nobody moving from Medusa gets
//! slower. A full backup of a generated node of about `--size-mib` MiB (default 100) to s3s-fs
//! on loopback runs in this process through the engine, once per `--transfers` value (default
//! 1,4), with the cap set and then without it (the uncapped speed shows the cap, not the
//! server, is the limit). Prints the throughput of the uploaded bytes beside the expected cap.
//!
//! Run: `cargo bench -p medusa-tests --bench bandwidth -- [--size-mib N] [--transfers 1,4]
//! [--cap 10MB/s]`.

mod common;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::{mbps, mib};
use harness::sim::SimSpec;
use medusa::format::layout::Mode;
use medusa_tests::{Env, EnvOptions, Kind, backup};

fn main() -> Result<()> {
    let (mut size_mib, mut transfers, mut cap) = (100u64, vec![1usize, 4], "10MB/s".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--size-mib" => size_mib = args.next().context("--size-mib N")?.parse()?,
            "--transfers" => {
                let v = args.next().context("--transfers 1,4")?;
                transfers = v.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--cap" => cap = args.next().context("--cap 10MB/s")?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    let per_transfer = medusa::config::parse_size(&cap).context("--cap must be a rate such as 10MB/s")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("\nBackup of ~{size_mib} MiB to s3s-fs (loopback), transfer_max_bandwidth = {cap} ({per_transfer} B/s)");
    println!("transfers  cap      uploaded MiB  seconds   MB/s  expected MB/s");
    for n in transfers {
        for capped in [true, false] {
            let (bytes, secs) = rt.block_on(run(size_mib, n, capped.then_some(cap.as_str())))?;
            let rate = mbps(bytes, secs);
            let expected = if capped { format!("{:.1}", (per_transfer * n as u64) as f64 / 1e6) } else { "-".into() };
            let label = if capped { cap.as_str() } else { "none" };
            println!("{n:>9}  {label:<7} {:>13.1} {secs:>8.2} {rate:>6.1} {expected:>14}", mib(bytes));
        }
    }
    println!("(MB = 10^6 bytes; the cap parses as Medusa's size units; uploaded = bytes of data files sent)");
    Ok(())
}

/// One full backup; returns (bytes uploaded, seconds).
async fn run(size_mib: u64, transfers: usize, cap: Option<&str>) -> Result<(u64, f64)> {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.spec = SimSpec::sized(size_mib << 20, 400, 7);
    o.storage_extra = format!("transfer_max_bandwidth = {}\n", cap.unwrap_or("0"));
    let env = Env::new(o).await?;
    // The env writes concurrent_transfers = 2; this bench sets its own.
    let ini = std::fs::read_to_string(&env.ini_path)?;
    let ini = ini.replace("concurrent_transfers = 2", &format!("concurrent_transfers = {transfers}"));
    std::fs::write(&env.ini_path, ini)?;
    let node = env.node()?;
    let t = Instant::now();
    let r = backup(&node, "bw", Mode::Full).await?;
    Ok((r.uploaded_bytes, t.elapsed().as_secs_f64()))
}
