//! A ring of 1-3 real nodes of one datacenter, every node a seed, one evenly spaced token each.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use super::node::{NodeConfig, RealNode, Tokens};

/// Longest the ring may take to show every node `UN` after the last node answered CQL.
const RING_TIMEOUT: Duration = Duration::from_secs(180);

/// `count` tokens evenly spaced over the Murmur3 range: `-2^63 + i * floor(2^64 / count)`.
pub fn even_tokens(count: usize) -> Vec<i64> {
    let step = (1i128 << 64) / count as i128;
    (0..count).map(|i| (-(1i128 << 63) + i as i128 * step) as i64).collect()
}

/// The nodes of one datacenter: `127.0.0.<first>..` in `<dir>/<label>` for each of `labels`
/// (pod names), Cassandra `version`, cluster `cluster`, one rack, every node a seed, tokens
/// evenly spaced. Not started.
pub fn ring_nodes(dir: &Path, version: &str, cluster: &str, first: u8, labels: &[&str]) -> Vec<RealNode> {
    let count = labels.len();
    let seeds: Vec<String> = (0..count).map(|i| format!("127.0.0.{}", first as usize + i)).collect();
    labels
        .iter()
        .zip(even_tokens(count))
        .enumerate()
        .map(|(i, (label, token))| {
            let config = NodeConfig {
                cluster: cluster.to_string(),
                seeds: seeds.clone(),
                tokens: Tokens::Initial(vec![token]),
                ..NodeConfig::single(version, first + i as u8)
            };
            RealNode::new(&dir.join(label), config).labelled(label)
        })
        .collect()
}

/// Starts `nodes` at once (each on a fresh `cassandra.yaml`, or the one in its `conf/` with
/// `keep_conf`) and waits until each sees all of them `UN`; returns the wall time.
pub async fn start_all(nodes: &mut [&mut RealNode], keep_conf: bool) -> Result<Duration> {
    let t0 = Instant::now();
    let starts =
        nodes.iter_mut().map(|n| async move { if keep_conf { n.start_keeping_conf().await } else { n.start().await } });
    for r in futures::future::join_all(starts).await {
        r?;
    }
    let all: Vec<&RealNode> = nodes.iter().map(|n| &**n).collect();
    wait_all_up(&all).await?;
    let took = t0.elapsed();
    println!("[cassandra] ring of {} up (every node UN everywhere) in {:.1} s", nodes.len(), took.as_secs_f64());
    Ok(took)
}

/// Waits until `nodetool status` on every node lists every node `UN`.
pub async fn wait_all_up(nodes: &[&RealNode]) -> Result<()> {
    let deadline = Instant::now() + RING_TIMEOUT;
    let want = nodes.len();
    for n in nodes {
        loop {
            let status = n.nodetool(&["status"]).await.unwrap_or_default();
            let up = status.lines().filter(|l| l.starts_with("UN ")).count();
            if up == want {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{}: {up} of {want} nodes UN after {RING_TIMEOUT:?}:\n{status}",
                n.label
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_tokens_are_those_of_ring_sh() {
        // ring.sh: echo "-(2^63) + ($i - 1) * ((2^64) / 3)" | bc
        assert_eq!(even_tokens(3), [-9223372036854775808, -3074457345618258603, 3074457345618258602]);
        assert_eq!(even_tokens(1), [i64::MIN]);
    }
}
